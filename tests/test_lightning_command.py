"""`lightning` hands the subcommands it does not own to another installed `lightning` (lightning-sdk)."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest

from conftest import TEST_PACKAGE


class FakeEntryPoint:
    def __init__(self, value, target):
        self.value, self.target = value, target

    def load(self):
        return self.target


def test_unknown_subcommands_go_to_the_other_lightning_command(pkg, monkeypatch):
    cli = importlib.import_module(f"{TEST_PACKAGE}.cli")
    calls = []
    points = [FakeEntryPoint(f"{TEST_PACKAGE}.cli:lightning_main", None),
              FakeEntryPoint("lightning_sdk.cli.entrypoint:main_cli", lambda: calls.append("sdk") or 0)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: points)
    monkeypatch.setattr("sys.argv", ["lightning", "login"])
    with pytest.raises(SystemExit) as exit_info:
        cli.lightning_main()
    assert calls == ["sdk"] and exit_info.value.code == 0


def test_without_another_lightning_command_ours_reports_the_choices(pkg, monkeypatch, capsys):
    cli = importlib.import_module(f"{TEST_PACKAGE}.cli")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [])
    monkeypatch.setattr("sys.argv", ["lightning", "login"])
    with pytest.raises(SystemExit):
        cli.lightning_main()
    assert "fit" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "expected"), [("ensemble", "seeds"), ("audit", "--threshold"), ("tanda", "learn")])
def test_project_commands_are_subcommands_with_their_own_help(pkg, capsys, command, expected):
    cli = importlib.import_module(f"{TEST_PACKAGE}.cli")
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0 and expected in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listing = capsys.readouterr().out
    assert all(name in listing for name in cli.COMMANDS) and "{fit,validate,test,predict}" in listing

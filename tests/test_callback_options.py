"""String options with a fixed set of values are `Literal[...]` in the callbacks' signatures.

So `lightning fit --help` lists the choices and jsonargparse rejects a bad value from a config or the
command line before anything is built; Python callers still get the callbacks' own ValueError. These
tests keep the Literal and the runtime check in step. No training: only constructors and parsers.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing

import pytest
from jsonargparse import ArgumentParser

from cnn_tricks.callbacks.activation_swap import ActivationSwap
from cnn_tricks.callbacks.compile_model import MODES as COMPILE_MODES
from cnn_tricks.callbacks.compile_model import CompileModel
from cnn_tricks.callbacks.init_schemes import DISTRIBUTIONS as HE_DISTRIBUTIONS
from cnn_tricks.callbacks.init_schemes import DISTRIBUTIONS as SMALL_DISTRIBUTIONS  # one tuple for both schemes
from cnn_tricks.callbacks.init_schemes import MODES as HE_MODES
from cnn_tricks.callbacks.init_schemes import HeInit, SmallRandomInit
from cnn_tricks.callbacks.lr_batch_scaling import RULES, LRBatchScaling
from cnn_tricks.layers.activations import ACTIVATIONS
from cnn_tricks.layers.xu_rrelu import _SAMPLING, XuRReLU

# (class, option, the module's tuple of accepted values); None in a tuple means the option is Optional.
OPTIONS = [
    (HeInit, "mode", HE_MODES),
    (HeInit, "distribution", HE_DISTRIBUTIONS),
    (SmallRandomInit, "distribution", SMALL_DISTRIBUTIONS),
    (LRBatchScaling, "rule", RULES),
    (CompileModel, "mode", COMPILE_MODES),
    (ActivationSwap, "activation", ACTIVATIONS),
    (ActivationSwap, "rrelu_sample", _SAMPLING),
    (XuRReLU, "sample", _SAMPLING),
]
IDS = [f"{cls.__name__}.{option}" for cls, option, _ in OPTIONS]


def literal_choices(cls: type, option: str) -> tuple[set, bool]:
    """The values of the option's Literal annotation, and whether it also allows None."""
    hint = typing.get_type_hints(cls.__init__)[option]
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = typing.get_args(hint)
        optional = type(None) in members
        (hint,) = [m for m in members if m is not type(None)]
    assert typing.get_origin(hint) is typing.Literal, f"{cls.__name__}.{option} is annotated {hint}, not a Literal"
    return set(typing.get_args(hint)), optional


@pytest.mark.parametrize(("cls", "option", "accepted"), OPTIONS, ids=IDS)
def test_literal_matches_the_values_accepted_at_runtime(cls, option, accepted):
    choices, optional = literal_choices(cls, option)
    assert choices == {v for v in accepted if v is not None}
    assert optional == (None in accepted)
    for value in accepted:
        cls(**{option: value})  # every choice is accepted at runtime
    with pytest.raises(ValueError, match="bogus"):
        cls(**{option: "bogus"})  # and Python callers still get the message naming the bad value


@pytest.mark.parametrize(("cls", "option", "accepted"), OPTIONS, ids=IDS)
def test_default_is_one_of_the_choices(cls, option, accepted):
    default = inspect.signature(cls.__init__).parameters[option].default
    assert default in accepted


@pytest.mark.parametrize(("cls", "option", "accepted"), OPTIONS, ids=IDS)
def test_jsonargparse_lists_the_choices_and_rejects_a_bad_value(cls, option, accepted, capsys):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "cb")
    help_text = "".join(parser.format_help().split())  # help wraps long lines, also at hyphens inside a choice
    for value in accepted:
        if value is not None:
            assert value in help_text, f"--cb.{option} help does not list {value!r}"
    good = next(v for v in accepted if v is not None)
    assert parser.parse_args([f"--cb.{option}={good}"]).cb[option] == good
    strict = ArgumentParser()
    strict.add_class_arguments(cls, "cb")
    with pytest.raises(SystemExit):
        strict.parse_args([f"--cb.{option}=bogus"])
    assert "bogus" in capsys.readouterr().err


def test_lightning_fit_help_lists_every_choice_of_every_trick_callback(pkg, capsys):
    """`lightning fit --help` ends with each trick callback's fixed choices (jsonargparse itself shows a
    class's options only under `--trainer.callbacks.help CLASS`)."""
    cli = importlib.import_module(f"{pkg.__name__}.cli")
    with pytest.raises(SystemExit):
        cli.CLI(args=["fit", "--help"])
    epilog = capsys.readouterr().out.split("Options with fixed choices of the trick callbacks")[1]
    lines = {line.split()[0]: line for line in epilog.splitlines()[1:] if line.strip()}
    for cls, option, _ in OPTIONS:
        if cls is XuRReLU:
            continue  # a layer, not a callback: its choices show through ActivationSwap.rrelu_sample
        choices, _ = literal_choices(cls, option)
        listed = lines[cls.__name__].split(f"{option}: ")[1].split(";")[0].split("|")
        assert set(listed) == choices

"""W&B logging that never prompts and never crashes a run for lack of a login."""

from __future__ import annotations

import netrc
import os
import socket
import struct
from pathlib import Path
from urllib.parse import urlparse

from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info


def has_wandb_credentials() -> bool:
    """True when wandb would find an API key without asking: env var, identity token, or netrc.

    Read here with the standard library because wandb's own lookup is private API that changes
    between releases, and calling `wandb.login()` may prompt.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def unreachable_server() -> str | None:
    """Why the W&B server cannot be reached (a TCP connect within 3 s), or None if it can.

    wandb itself waits WANDB_INIT_TIMEOUT (30 s here) and then some before giving up on a dead
    server; a connect refused or timing out here sends the run offline at once. Skipped behind a
    proxy, where only wandb's own request can tell.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=3):
            return None
    except OSError as error:
        return f"W&B unreachable: {url.hostname}:{port}: {error.strerror or error}"


class AutoWandbLogger(WandbLogger):
    """Lightning's `WandbLogger`, online when you are logged in and offline otherwise.

    Without an API key (`WANDB_API_KEY`, `wandb login`'s netrc entry) a plain WandbLogger would
    prompt or fail; this one logs offline and prints one line with the run folder and the
    `wandb sync` command that uploads it later. If the server cannot be reached at start (a 3 s
    connect check, then wandb's own WANDB_INIT_TIMEOUT), the run goes offline the same way instead of failing; once running, wandb uploads in a background
    process, so an outage never blocks a training step. `WANDB_MODE=offline|disabled` is respected.

    Example (in a config):
        trainer:
          logger:
            class_path: AutoWandbLogger
            init_args: {project: my-cnn, save_dir: runs}
    """

    def __init__(self, *args, offline: bool | None = None, **kwargs) -> None:
        # A recipe that switches the logger has no project name to give: default to the project folder.
        if not args and not kwargs.get("project"):
            kwargs["project"] = os.environ.get("WANDB_PROJECT") or Path.cwd().name
        # wandb resolves a relative folder against the working directory of its first run in the
        # process; resolving it here keeps every run where the config says.
        for key in ("save_dir", "dir"):
            if kwargs.get(key):
                kwargs[key] = str(Path(kwargs[key]).resolve())
        mode = os.environ.get("WANDB_MODE", "").lower()
        self._offline_reason = None
        if offline:
            self._offline_reason = "offline=true"
        elif mode in {"offline", "dryrun"}:
            self._offline_reason = f"WANDB_MODE={mode}"
        elif offline is None and mode != "disabled" and not has_wandb_credentials():
            self._offline_reason = "no W&B login found; run `wandb login` or set WANDB_API_KEY to log online"
        elif offline is None and mode != "disabled":
            self._offline_reason = unreachable_server()
        if self._offline_reason:
            os.environ.setdefault("WANDB_SILENT", "true")  # our one line replaces wandb's banner
        else:
            # wandb waits 90 s for an unreachable server before failing; fall back to offline sooner.
            os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")
        super().__init__(*args, offline=bool(self._offline_reason), **kwargs)
        if self._wandb_init.get("anonymous") is None:  # recent wandb warns on any value, None included
            self._wandb_init.pop("anonymous", None)
        self._announced = False

    @property
    def experiment(self):
        try:
            run = super().experiment
        except Exception as error:  # W&B unreachable or refusing: training goes on, offline
            if self._offline_reason:
                raise
            self._offline_reason = f"W&B unreachable: {str(error).splitlines()[0][:200]}"
            self._offline = True
            self._wandb_init["mode"] = "offline"
            run = super().experiment
        # Ranks other than 0 get Lightning's DummyExperiment, whose attributes are no-op methods.
        if self._offline_reason and not self._announced and isinstance(getattr(run, "dir", None), str):
            self._announced = True
            run_dir = Path(run.dir).parent
            rank_zero_info(f"W&B offline ({self._offline_reason}): run saved in {run_dir}; upload it with `wandb sync {run_dir}`")
        return run


def read_offline_run(path: str | Path):
    """The records (wandb protobufs) of an offline run's `.wandb` file: a 7-byte W&B header, then
    LevelDB-log blocks of 32 KiB. An offline run writes no wandb-summary.json; this reads what it
    logged without uploading it. Written here because wandb's own reader moved into its compiled core.
    """
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending = Path(path).read_bytes(), 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record

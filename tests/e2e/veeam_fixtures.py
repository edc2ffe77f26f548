"""pytest fixtures for the project's Veeam Backup & Replication REST API replay (see
drcheck/lab_veeam.py and tests/peers/veeam/README.md). Plugged in by tests/e2e/conftest.py
with a star import.

- `make_veeam(scenario=..., **kwargs)`: start a `VeeamReplay` (kwargs as its `__init__`; TLS
  with the session's `vcsim_ca` unless `tls=` is given, `tls=None` for plain HTTP); every
  replay it started is stopped at teardown, passed or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from drcheck.lab_vcsim import TestCA
from drcheck.lab_veeam import VeeamReplay

__all__ = ["make_veeam"]

_DEFAULT = object()


@pytest.fixture
def make_veeam(tmp_path: Path, vcsim_ca: TestCA) -> Callable[..., VeeamReplay]:
    """Factory: `make_veeam(scenario={...}, token_lifetime=2, vcsim_control_url=sim.control_url)`."""
    started: list[VeeamReplay] = []

    def make(*, tls=_DEFAULT, **kwargs) -> VeeamReplay:
        replay = VeeamReplay(tmp_path / f"veeam{len(started)}", tls=vcsim_ca if tls is _DEFAULT else tls, **kwargs)
        started.append(replay)
        return replay.start()

    yield make
    for replay in started:
        replay.stop()

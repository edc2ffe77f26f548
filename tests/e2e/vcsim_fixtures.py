"""pytest fixtures for the project's vCenter simulator (see drcheck/lab_vcsim.py and
tests/peers/vcsim/README.md). Plugged in by tests/e2e/conftest.py with a star import.

- `vcsim_binary` (session): the built simulator; skips (fails in CI) when Go is missing.
- `make_vcenter(**kwargs)`: start a `Simulator` (kwargs as `Simulator.__init__`); every
  simulator it started is stopped at teardown, passed or not.
- `vcsim_ca` (session): a throwaway CA and a certificate for 127.0.0.1/localhost.
- `vsphere_connect(sim, **kwargs)`: a pyvmomi ServiceInstance for raw-API tests.
"""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path
from typing import Callable

import pytest

from drcheck import lab_vcsim
from drcheck.lab_vcsim import Simulator, TestCA

__all__ = ["vcsim_binary", "make_vcenter", "vcsim_ca", "vsphere_connect"]


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    """The simulator binary, built from tests/peers/vcsim if missing or stale."""
    try:
        return lab_vcsim.binary()
    except lab_vcsim.VcsimError as err:
        if shutil.which("go") is None:
            pytest.skip(f"vcsim cannot be built: {err} (make test installs Go)")
        raise


@pytest.fixture
def make_vcenter(vcsim_binary: Path, tmp_path: Path) -> Callable[..., Simulator]:
    """Factory: `make_vcenter(scenario={...}, vm=0, ...)` returns a started Simulator."""
    started: list[Simulator] = []

    def make(**kwargs) -> Simulator:
        kwargs.setdefault("binary_path", vcsim_binary)
        sim = Simulator(tmp_path / f"vcsim{len(started)}", **kwargs)
        started.append(sim)
        return sim.start()

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture(scope="session")
def vcsim_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return lab_vcsim.make_test_ca(tmp_path_factory.mktemp("vcsim-ca"))


def vsphere_connect(sim: Simulator, *, cafile: Path | None = None, user: str | None = None,
                    password: str | None = None, verify: bool = False, timeout: float | None = 60):
    """Log in with pyvmomi; `verify=True` (or a `cafile`) checks the certificate; `timeout`
    is the socket timeout of every request (seconds)."""
    from pyVim.connect import SmartConnect

    if cafile is not None or verify:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    else:
        context = ssl._create_unverified_context()
    return SmartConnect(host=sim.host, port=sim.port, user=user or sim.username,
                        pwd=password if password is not None else sim.password, sslContext=context,
                        httpConnectionTimeout=timeout)

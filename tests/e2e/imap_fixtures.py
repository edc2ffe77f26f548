"""pytest fixtures for a real IMAP server: Debian's Dovecot run unprivileged from a
configuration in a temp dir (see drcheck/lab_imap.py). Plugged in by tests/e2e/conftest.py
with a star import.

- `imap_ca` (session): a throwaway CA and a certificate for 127.0.0.1/localhost.
- `make_imap(users={...}, **kwargs)`: start a `Dovecot` (kwargs as `Dovecot.__init__`);
  every server it started is stopped at teardown, passed or not. Skips (fails in CI)
  when Dovecot is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from drcheck import lab_vcsim
from drcheck.lab_imap import Dovecot, DovecotError, dovecot_binary
from drcheck.lab_vcsim import TestCA

__all__ = ["imap_ca", "make_imap"]


@pytest.fixture(scope="session")
def imap_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return lab_vcsim.make_test_ca(tmp_path_factory.mktemp("imap-ca"))


@pytest.fixture
def make_imap(imap_ca: TestCA, tmp_path: Path) -> Iterator[Callable[..., Dovecot]]:
    """Factory: `make_imap(users={"reports": "secret"})` returns a started Dovecot."""
    try:
        dovecot_binary()
    except DovecotError as err:
        pytest.skip(str(err))
    started: list[Dovecot] = []

    def make(users: dict[str, str] | None = None, **kwargs) -> Dovecot:
        kwargs.setdefault("tls", imap_ca)
        server = Dovecot(tmp_path / f"imap{len(started)}", users=users or {"reports": "secret"}, **kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()

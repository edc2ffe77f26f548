"""The demo's Barracuda mailbox: a throwaway Dovecot (`drcheck.lab_imap`) at the probe's
host and port, logged into with the probe's username and password file, trusted through
its `ca_bundle`, holding a few nights of report e-mails written by the project's sample
generator (`tests/peers/barracuda/generator.py`, read from the checkout like the vCenter
simulator's sources).

What it holds: four nights of a "Nightly" schedule backing up every data source the
probe's rules name (patterns become one example name), with offsite replication up to
date; an appliance-offline alert the next report ended, and a software notice. One data
source goes silent two nights before the demo (the data sources of the demo's stale
systems, `drcheck.demo.STALE_SYSTEMS`, else the last one named): the appliance stopped
backing it up, and nothing reports it — a missed backup drcheck must show.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from drcheck.results import utcnow
from drcheck.secrets import write_secret_file

if TYPE_CHECKING:
    from drcheck.lab_imap import Dovecot
    from drcheck.probes.barracuda import BarracudaProbe

GENERATOR = Path("tests/peers/barracuda/generator.py")
APPLIANCE = "bbs-district"


def generator() -> ModuleType:
    """The project's sample e-mail generator, loaded from the checkout by file path."""
    from drcheck.lab_vcsim import project_root

    path = project_root() / GENERATOR
    if not path.is_file():
        raise FileNotFoundError(f"the sample e-mail generator {path} is missing (run from a drcheck checkout)")
    name = "drcheck_barracuda_samples"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


def example_name(pattern: str) -> str:
    """A name a shell pattern matches ('sis-*' -> 'sis-01')."""
    return pattern.replace("*", "01").replace("?", "1").split("[")[0] or "source01"


class LabMailbox:
    """A Dovecot serving the probe's mailbox, inside the demo lab (the directory of the
    probe's `ca_bundle`)."""

    def __init__(self, target: "BarracudaProbe", loaded: Any, silent: set[str] | None = None):
        self.target = target
        self.loaded = loaded
        self.password_file = target.password.ref().file_path()
        self.ca_bundle = target.ca_bundle
        self._silent = silent
        self._server: Dovecot | None = None

    def owned_paths(self) -> list[Path]:
        if self.password_file is None or self.ca_bundle is None:
            raise ValueError("the demo's mailbox needs password = { file = … } and ca_bundle")
        if self.target.host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the demo's mailbox must be on 127.0.0.1, not {self.target.host}")
        return [self.password_file, self.ca_bundle.parent]

    def init(self) -> None:
        from drcheck.lab_vcsim import make_test_ca

        write_secret_file(self.password_file)
        make_test_ca(self.ca_bundle.parent)
        if self.ca_bundle.name != "ca.pem":
            self.ca_bundle.write_bytes((self.ca_bundle.parent / "ca.pem").read_bytes())

    def sources(self) -> list[Any]:
        """The data sources the mail reports (generator `Source`s), in rule order."""
        g = generator()
        found: dict[str, Any] = {}
        for rule in self.target.systems:
            computer = next((example_name(c) for c in rule.computers), None)
            names = [example_name(p) for p in rule.data_sources] or [computer.split(".")[0] if computer
                                                                        else rule.system]
            for name in names:
                if computer:
                    found.setdefault(name, g.Source(name, computer=computer, type="Barracuda Backup Agent"))
                else:
                    found.setdefault(name, g.Source(name))
        return list(found.values())

    def silent(self) -> set[str]:
        """The data sources that stop reporting (see the module docstring)."""
        if self._silent is not None:
            return self._silent
        from drcheck.demo import STALE_SYSTEMS

        names = {example_name(p) for rule in self.target.systems if rule.system in STALE_SYSTEMS
                 for p in rule.data_sources}
        sources = self.sources()
        return names or ({sources[-1].name} if sources else set())

    def messages(self) -> list[bytes]:
        """The mailbox's messages, oldest first."""
        g = generator()
        now = utcnow()
        appliance = next((a for rule in self.target.systems for a in rule.appliances if "*" not in a), APPLIANCE)
        mail = g.nightly(appliance, "Nightly", self.sources(), days=4, now=now, silent=self.silent())
        mail.insert(1, g.alert(appliance, "offline", now - timedelta(days=3, hours=1)))
        mail.insert(2, g.alert(appliance, "online", now - timedelta(days=3)))
        mail.append(g.notice(appliance, now - timedelta(days=1)))
        return mail

    def start(self) -> None:
        from drcheck.lab_imap import Dovecot, free_port
        from drcheck.lab_vcsim import TestCA

        directory = self.ca_bundle.parent
        tls = TestCA(self.ca_bundle, directory / "server.pem", directory / "server.key")
        ports = {"starttls_port": self.target.port, "port": free_port()} if self.target.starttls else \
            {"port": self.target.port}
        self._server = Dovecot(directory / "dovecot", tls=tls,
                               users={self.target.username: self.password_file.read_text().strip()}, **ports)
        if self.target.move_to:
            self._server.create_folder(self.target.username, self.target.move_to)
        if not self._server.message_files(self.target.username, self.target.folder):  # first start of this lab
            self._server.deliver(self.target.username, self.messages(), self.target.folder)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

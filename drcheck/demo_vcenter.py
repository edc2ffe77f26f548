"""The demo's vCenter: the project's simulator (`drcheck.lab_vcsim`) serving a small
district built from the configuration, so `drcheck demo` shows VM inventory,
reconciliation and fenced VM restore tests without a real vSphere.

What it holds: one VM per host the file-backup probes back up and per `vm:` asset of every
runbook (in the folder the system's runbook claims, with a nightly snapshot: the one a
rotation clones), the VMs the `vm` restore tests clone (replicas, powered off, with a
recent snapshot), their sandbox folders and isolated port groups (no uplinks), and two
VMs that tell the rest of the story: `library-kiosk`, which nobody backs up (unprotected),
and `lab-07`, covered by an exclusion in the demo configuration.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from drcheck.secrets import write_secret_file
from drcheck.vm_select import asset_selectors

if TYPE_CHECKING:
    from drcheck.config_loader import LoadedConfig

log = logging.getLogger(__name__)

SERVERS = "DC0/vm/Servers"
STORY_VMS = (
    {"name": "library-kiosk", "folder": "DC0/vm/Library", "hostname": "library-kiosk.district.local"},
    {"name": "lab-07", "folder": "DC0/vm/Labs", "hostname": "lab-07.district.local"},
)


class LabVCenter:
    """A simulated vCenter at the vmware probe's URL, trusted through its `ca_bundle` and
    logged into with its `username` and password file, all inside the demo lab."""

    def __init__(self, target: Any, loaded: "LoadedConfig"):
        self.target = target
        self.loaded = loaded
        self.password_file = target.password.ref().file_path()
        self.ca_bundle = target.ca_bundle
        self._simulator = None

    def owned_paths(self) -> list[Path]:
        if self.password_file is None or self.ca_bundle is None:
            raise ValueError("the demo's vCenter needs password = { file = … } and ca_bundle")
        return [self.password_file, self.ca_bundle.parent, *self._guest_password_files()]

    def _vm_tests(self) -> list[Any]:
        probe = next(n for n, p in self.loaded.config.probes.items() if p is self.target)
        return [t for t in self.loaded.config.restore_tests.values() if t.kind == "vm" and t.probe == probe]

    def _guest_password_files(self) -> list[Path]:
        return [path for t in self._vm_tests() if t.guest_command
                if (path := t.guest_command.password.ref().file_path()) is not None]

    def init(self) -> None:
        from drcheck.lab_vcsim import make_test_ca

        write_secret_file(self.password_file)
        for path in self._guest_password_files():
            write_secret_file(path)
        make_test_ca(self.ca_bundle.parent)
        if self.ca_bundle.name != "ca.pem":
            self.ca_bundle.write_bytes((self.ca_bundle.parent / "ca.pem").read_bytes())

    def start(self) -> None:
        from drcheck.lab_vcsim import Simulator, TestCA

        directory = self.ca_bundle.parent
        guest_passwords = {p.read_text().strip() for p in self._guest_password_files()}
        self._simulator = Simulator(
            directory / "simulator", scenario=self.scenario(), dc=1, cluster=1, host=2, ds=1, vm=0,
            username=self.target.username, password=self.password_file.read_text().strip(),
            tls=TestCA(self.ca_bundle, directory / "server.pem", directory / "server.key"),
            guest_password=guest_passwords.pop() if guest_passwords else "lab",
            port=urlsplit(self.target.url).port or 443)
        self._simulator.start()
        # other lab peers publish into this vCenter (a Veeam instant recovery): say where
        (directory / "simulator" / "control.url").write_text(self._simulator.control_url + "\n")

    def stop(self) -> None:
        if self._simulator is not None:
            self._simulator.stop()
            self._simulator = None

    def scenario(self) -> dict[str, Any]:
        """The simulator scenario (tests/peers/vcsim/README.md) this configuration needs."""
        vms: dict[str, dict[str, Any]] = {}
        for system, host in self._backed_up_hosts():
            vms[host] = _vm(host, self._folder_of(system), snapshot=("nightly", "3h"))
        for rb in self.loaded.runbooks.values():
            for selector in asset_selectors(rb.assets):
                folder = f"DC0/vm/{selector.folder.strip('/')}" if selector.folder else SERVERS
                vms.setdefault(selector.name, _vm(selector.name, folder, snapshot=("nightly", "3h")))
        if "files01" in vms:  # forgotten after an upgrade: an old-snapshot finding
            vms["files01"]["snapshots"].insert(0, {"name": "before-upgrade", "age": "240h"})
        if "sis01" in vms:  # what a backup product writes into vCenter (read by last_backup_attribute)
            vms["sis01"]["attributes"] = {"Last Backup": "nightly job succeeded"}
        networks = {}
        for test in self._vm_tests():
            networks[test.sandbox.network] = {"datacenter": "DC0", "name": test.sandbox.network, "uplinks": False}
            clone_of = getattr(test.source, "vm", None)
            if clone_of and clone_of not in vms:
                vms[clone_of] = _vm(clone_of, "DC0/vm/Replicas", snapshot=("replica", "50m"), power="off",
                                    hostname=f"{clone_of.split('-replica')[0]}.district.local")
        for story in STORY_VMS:
            vms.setdefault(story["name"], _vm(story["name"], story["folder"], hostname=story["hostname"]))
        folders = {vm["folder"] for vm in vms.values()} | {t.sandbox.folder.strip("/") for t in self._vm_tests()}
        return {"folders": sorted(folders), "custom_fields": ["Last Backup"], "networks": list(networks.values()),
                "vms": list(vms.values())}

    def _backed_up_hosts(self) -> list[tuple[str, str]]:
        """(system, host) of every host a file-backup probe's rules name: the servers."""
        from drcheck.kinds import FileBackupTarget

        return [(rule.system, host) for probe in self.loaded.config.probes.values()
                if isinstance(probe, FileBackupTarget) for rule in probe.systems for host in rule.hosts]

    def _folder_of(self, system: str) -> str:
        """The folder a runbook's `vms` selectors put the system's VMs in, else Servers."""
        runbook = self.loaded.runbooks.get(system)
        folders = [s.folder.strip("/") for s in (runbook.vms if runbook else []) if s.folder]
        return folders[0] if folders else SERVERS


def _vm(name: str, folder: str, *, snapshot: tuple[str, str] | None = None, power: str = "on",
        hostname: str | None = None) -> dict[str, Any]:
    return {"name": name, "folder": folder, "cluster": "DC0_C0", "datastore": "LocalDS_0", "network": "VM Network",
            "guest_id": "otherGuest64", "memory_mb": 256, "power": power,
            "hostname": hostname or f"{name}.district.local",
            "snapshots": [{"name": snapshot[0], "age": snapshot[1]}] if snapshot else []}

"""The demo's Veeam Backup & Replication server: the project's REST replay
(`drcheck.lab_veeam`) serving backups of the VMs a veeam probe's configuration names, and
publishing instant recoveries into the demo's simulated vCenter.

What it holds: one backup job ("Servers nightly") with every VM the probe's `systems` name
exactly and every VM a `veeam-instant` test restores (14 daily points, the newest 5 h old),
one backup-copy job per `copy_jobs` entry (7 points, the newest 3 h old), and the sandbox
folders of those tests. Instant recovery clones the same-named VM of the simulated vCenter.

The replay learns where the simulator's control API is from `control.url` in the
simulator's directory (`<vCenter ca_bundle dir>/simulator/`), which the demo's vCenter
writes when it starts; without it, instant recoveries fail with a message saying so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from drcheck.secrets import write_secret_file

if TYPE_CHECKING:
    from drcheck.config_loader import LoadedConfig
    from drcheck.lab_veeam import VeeamReplay

log = logging.getLogger(__name__)

NIGHTLY = "Servers nightly"


def veeam_tests(target: Any, loaded: "LoadedConfig") -> list[Any]:
    """The `vm` restore tests whose source is an instant recovery by this probe."""
    name = next(n for n, p in loaded.config.probes.items() if p is target)
    return [t for t in loaded.config.restore_tests.values()
            if t.kind == "vm" and getattr(t.source, "type", None) == "veeam-instant" and t.source.probe == name]


def scenario(target: Any, loaded: "LoadedConfig") -> dict[str, Any]:
    """The replay scenario (tests/peers/veeam/README.md) this configuration needs."""
    vms = sorted({p for rule in target.systems for p in rule.vms if not any(c in p for c in "*?[")}
                 | {t.source.vm for t in veeam_tests(target, loaded)})
    folders = sorted({t.sandbox.folder.strip("/") for t in veeam_tests(target, loaded)})
    jobs: list[dict[str, Any]] = [{"name": NIGHTLY, "objects": [{"vm": vm} for vm in vms],
                                   "points": {"count": 14, "every": "24h", "newest": "5h"},
                                   "sessions": [{"age": "29h"}, {"age": "5h", "result": "Success"}]}]
    for job in sorted(target.copy_jobs):
        jobs.append({"name": job, "type": "BackupCopy", "source_job": NIGHTLY, "repository": "Offsite Repository",
                     "objects": [{"vm": vm} for vm in vms], "points": {"count": 7, "every": "24h", "newest": "3h"},
                     "sessions": [{"age": "3h", "result": "Success"}]})
    return {"vcenter": {"host": _vcenter_host(loaded),
                        "folders": {f"group-demo{i}": folder for i, folder in enumerate(folders)}},
            "repositories": [{"name": "Default Backup Repository"}, {"name": "Offsite Repository"}],
            "vms": [{"name": vm, "source": vm} for vm in vms], "jobs": jobs}


def init(target: Any, loaded: "LoadedConfig") -> None:
    """Write the password file and, unless the directory holds one already (a vCenter
    sharing it), a test CA with a server certificate beside `ca_bundle`."""
    from drcheck.lab_vcsim import make_test_ca

    write_secret_file(target.password.ref().file_path())
    directory = target.ca_bundle.parent
    if not all((directory / f).exists() for f in ("ca.pem", "server.pem", "server.key")):
        make_test_ca(directory)
    if target.ca_bundle.name != "ca.pem":
        target.ca_bundle.write_bytes((directory / "ca.pem").read_bytes())


def start(target: Any, loaded: "LoadedConfig") -> "VeeamReplay":
    """Start the replay at the probe's URL; return it (the caller stops it)."""
    from drcheck.lab_vcsim import TestCA
    from drcheck.lab_veeam import VeeamReplay

    directory = target.ca_bundle.parent
    control = vcsim_control_url(loaded)
    if control is None:
        log.warning("demo: no simulated vCenter control URL found; Veeam instant recoveries will fail")
    replay = VeeamReplay(directory / "veeam-replay", scenario=scenario(target, loaded),
                         tls=TestCA(target.ca_bundle, directory / "server.pem", directory / "server.key"),
                         username=target.username, password=target.password.ref().reveal(),
                         port=urlsplit(target.url).port or 443, vcsim_control_url=control)
    return replay.start()


def vcsim_control_url(loaded: "LoadedConfig") -> str | None:
    """The control API of the demo's simulated vCenter (first vmware probe), from the
    `control.url` file its lab writes, or None."""
    for probe in loaded.config.probes.values():
        if probe.kind == "vmware" and getattr(probe, "ca_bundle", None):
            marker = Path(probe.ca_bundle).parent / "simulator" / "control.url"
            if marker.exists():
                return marker.read_text().strip() or None
    return None


def _vcenter_host(loaded: "LoadedConfig") -> str:
    hosts = [urlsplit(p.url).hostname for p in loaded.config.probes.values() if p.kind == "vmware"]
    return hosts[0] if hosts and hosts[0] else "vcenter.lab.local"

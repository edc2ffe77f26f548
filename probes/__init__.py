"""Probes: read-only, cheap, frequent looks at backup sources.

One module per kind, meeting `drcheck.kinds.ProbeModule` (its `Target` config model and
its declared `ACTIONS`; file-backup kinds also `file_source`). This registry is the only
list of kinds: a new kind is its module, its client, one line here and its tests.
"""

REGISTRY: dict[str, str] = {
    "restic": "drcheck.probes.restic",
    "borg": "drcheck.probes.borg",
    "vmware": "drcheck.probes.vmware",
    "veeam": "drcheck.probes.veeam",
    "barracuda": "drcheck.probes.barracuda",
}

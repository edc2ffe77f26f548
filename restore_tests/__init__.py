"""Restore tests: restore into a sandbox, verify, measure RTO/RPO, always clean up.

One module per kind, meeting `drcheck.kinds.RestoreTestModule`: `run(target, ctx)` and its
`Target` config model. Every resource a test creates is leased in the store before it
exists (see drcheck.sandbox). This registry is the only list of kinds.
"""

REGISTRY: dict[str, str] = {
    "files": "drcheck.restore_tests.files",
    "vm": "drcheck.restore_tests.vm",
}

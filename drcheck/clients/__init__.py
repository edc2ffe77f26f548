"""Thin wrappers over every external system drcheck talks to.

This is the only place that starts programs or opens connections; unit tests replace
these modules, nothing deeper. Every client raises a subclass of `SourceError`, and
probes and restore tests catch the base, never one client's error.
"""


class SourceError(RuntimeError):
    """An external system could not give an answer, or gave a damning one.

    `reason` is one line fit for a result (never a secret). `damaged=True` means the backup
    itself is bad (corrupt data, missing pack): the result is FAILED. Otherwise drcheck
    could not find out (unreachable, wrong password, timeout): the result is ERROR.
    """

    def __init__(self, reason: str, damaged: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.damaged = damaged

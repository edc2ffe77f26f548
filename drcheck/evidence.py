"""Tamper-evident evidence: every stored result carries a hash chained to the previous one.

CONTRACT (implemented by the evidence work of issue 8):
- `head(store) -> ChainHead`: the number of sealed rows and the digest of the newest link.
- `verify(store_or_path) -> Verification`: walks the chain; `.ok`, `.first_broken` (table, row
  id, why), `.checked`.
- `export(store, directory) -> Path`: a bundle (CSV + JSON + the head digest) that `verify`
  accepts on its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChainHead:
    """The newest link of the evidence chain: how many rows it seals and its digest (hex)."""

    count: int
    digest: str
    at: str | None = None  # recorded_at of the newest sealed row


def head(store) -> ChainHead:
    """The chain's head (stub until the evidence chain lands: an empty chain)."""
    return ChainHead(0, "0" * 64)

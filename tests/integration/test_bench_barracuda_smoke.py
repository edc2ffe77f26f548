"""bench/bench_barracuda.py at a tiny size against a real Dovecot: it must run, pass its own
honesty checks (every timed IMAP session sent every message, as Dovecot logs it; the probe
read them all as reports; each incremental run read exactly the new ones) and write its
rows, so a change to the probe, the IMAP client, the parser or the generator that breaks the
benchmark fails the tests rather than `make bench`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from drcheck.lab_imap import DovecotError, dovecot_binary

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    try:
        dovecot_binary()
    except DovecotError as err:
        pytest.skip(str(err))
    spec = importlib.util.spec_from_file_location("bench_barracuda", ROOT / "bench" / "bench_barracuda.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        sys.modules.pop("barracuda_generator", None)


def test_the_barracuda_bench_runs_at_a_tiny_size_and_writes_its_rows(bench, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    assert bench.main(["--messages", "60", "--new", "3", "--repeat", "2", "--tmpdir", str(tmp_path),
                       "--rows", str(rows)]) == 0
    out = capsys.readouterr().out
    assert "Barracuda mailbox, 60 report messages" in out and "incremental run after 3 new messages" in out
    figures = {row["name"]: row for row in map(json.loads, rows.read_text().splitlines())}
    first = figures["barracuda mailbox first run vs plain imapclient fetch (60 messages)"]
    assert first["drcheck_seconds"] > 0 and first["baseline_seconds"] > 0 and first["goal"] == "<= 1.3x"
    incremental = figures["barracuda mailbox incremental run after 3 new vs first run (60 messages)"]
    assert incremental["goal"] == "< 5%" and incremental["baseline_seconds"] == first["drcheck_seconds"]
    assert incremental["ratio"] == pytest.approx(incremental["drcheck_seconds"] / first["drcheck_seconds"])


def test_sessions_are_read_from_dovecots_log(bench, tmp_path):
    class Server:
        log_path = tmp_path / "dovecot.log"

    Server.log_path.write_text(
        "Nov 23 20:24:21 imap-login: Info: Login: user=<r>, method=PLAIN, rip=127.0.0.1, TLS, session=<a>\n"
        "Nov 23 20:24:22 imap(r)<8178><a>: Info: Disconnected: Logged out in=303 out=19787148 deleted=0 "
        "expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=10000 body_bytes=19328894\n")
    assert bench.sessions(Server) == [bench.Session(10000, 19328894)]

"""Barracuda benchmark: drcheck's `mailbox` probe action reading Barracuda Backup report
e-mails from a real IMAP server (the project's throwaway Dovecot, `drcheck/lab_imap.py`,
over verified TLS with a test CA), fed `--messages` report e-mails (default 10,000) from the
project's sample generator (`tests/peers/barracuda/generator.py`, `bulk`).

1. First run: `drcheck.engine.run_probe(loaded, store, "bbs", "mailbox")` into an empty store
   (cursor 0: every message is fetched, parsed and recorded), in-process, timed end to end,
   vs a plain imapclient script fetching the same messages: connect (TLS, the same CA),
   LOGIN, EXAMINE, UID SEARCH, UID FETCH BODY.PEEK[] in the probe client's batches
   (`drcheck.clients.imap.BATCH`), LOGOUT. Goal <= 1.3x. Also shown: the same fetch through
   imaplib's raw FETCH (imapclient's response parser left out), the floor.
2. Incremental: after the first run, `--new` messages (default 10) are delivered and the probe
   runs again on the same store (it fetches only the UIDs above its cursor). Goal: < 5 % of
   the first run.

Each first-run round uses a fresh store. Both sides must fetch the same messages: Dovecot logs
each session's `body_count` and `body_bytes`, and those of every timed session must equal the
messages and bytes in the mailbox (the incremental run: the new ones); otherwise the
benchmark exits 1. Best of `--repeat` rounds, the sides alternating order. No wall-clock
assertions: a missed goal prints MISS and exits 0.

    .venv/bin/python bench/bench_barracuda.py [--messages 10000] [--new 10] [--repeat 5] [--profile]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figure, add_common_arguments, fmt_times, print_profile, time_probe, verdict  # noqa: E402
from rows import emit  # noqa: E402

FIRST_GOAL = 1.3  # first run / plain imapclient fetch, at most
INCREMENTAL_GOAL = 0.05  # incremental run / first run, below
PROBE = "bbs"
ACTION = "mailbox"
USER, PASSWORD = "backup-reports", "bench-secret"
APPLIANCE = "bbs-district"
ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "tests" / "peers" / "barracuda" / "generator.py"


def generator():
    """The project's sample-message generator (loaded by file path: tests/ is no package
    the installed drcheck ships)."""
    spec = importlib.util.spec_from_file_location("barracuda_generator", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# -- the lab ---------------------------------------------------------------------------


def start_dovecot(work: Path, tls):
    from drcheck.lab_imap import Dovecot

    t0 = time.perf_counter()
    server = Dovecot(work / "dovecot", tls=tls, users={USER: PASSWORD}).start()
    server.startup_seconds = time.perf_counter() - t0
    return server


# -- Dovecot's own account of each session ---------------------------------------------

_LOGGED_OUT = re.compile(r"imap\(([^)]*)\).*Logged out .*\bbody_count=(\d+) body_bytes=(\d+)")
_LOGGED_IN = re.compile(r"imap-login: .*Login: user=")


@dataclass(frozen=True)
class Session:
    """What Dovecot logged at a session's logout: messages and body bytes it sent."""

    body_count: int
    body_bytes: int


def sessions(server, timeout: float = 10) -> list[Session]:
    """Every logged-out IMAP session in Dovecot's log, oldest first, once every session that
    logged in has logged out (Dovecot writes the logout line just after the client left)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = server.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        found = [Session(int(m.group(2)), int(m.group(3))) for m in _LOGGED_OUT.finditer(text)]
        if len(found) >= len(_LOGGED_IN.findall(text)) or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


# -- the sides -------------------------------------------------------------------------


def plain_fetch(server, above: int = 0, raw: bool = False) -> tuple[float, int, int]:
    """The baseline: a plain imapclient session (TLS verified with the same CA): LOGIN,
    EXAMINE INBOX, UID SEARCH above `above`, UID FETCH BODY.PEEK[] in batches of the probe
    client's size, LOGOUT. With `raw`, each batch is fetched through the imaplib connection
    imapclient wraps (its response parser left out, as drcheck's client does). Returns
    (seconds, messages, body bytes)."""
    from imapclient import IMAPClient

    from drcheck.clients.imap import BATCH, uid_set

    count = size = 0
    t0 = time.perf_counter()
    client = IMAPClient(server.host, server.port, ssl=True,
                        ssl_context=ssl.create_default_context(cafile=str(server.tls.ca)), timeout=120)
    try:
        client.login(USER, PASSWORD)
        client.select_folder("INBOX", readonly=True)
        uids = sorted(uid for uid in client.search(["UID", f"{above + 1}:*"]) if uid > above)
        for start in range(0, len(uids), BATCH):
            part = uids[start:start + BATCH]
            if raw:
                typ, data = client._imap.uid("FETCH", uid_set(part), "(UID BODY.PEEK[])")
                if typ != "OK":
                    raise RuntimeError(f"UID FETCH answered {typ}")
                bodies = [item[1] for item in data if isinstance(item, tuple)]
            else:
                bodies = [v[b"BODY[]"] for v in client.fetch(part, [b"BODY.PEEK[]"]).values()]
            count += len(bodies)
            size += sum(len(b) for b in bodies)
    finally:
        client.logout()
    return time.perf_counter() - t0, count, size


def last_uid(server) -> int:
    """The highest UID in INBOX now (untimed bookkeeping for the incremental baseline)."""
    from imapclient import IMAPClient

    client = IMAPClient(server.host, server.port, ssl=True,
                        ssl_context=ssl.create_default_context(cafile=str(server.tls.ca)), timeout=120)
    try:
        client.login(USER, PASSWORD)
        client.select_folder("INBOX", readonly=True)
        return max(client.search(["ALL"]) or [0])  # imapclient searches by UID
    finally:
        client.logout()


# -- configuration ---------------------------------------------------------------------


def write_config(work: Path, server, sources: list[str], per_system: int) -> Path:
    """A drcheck.toml whose probe `bbs` reads the mailbox as a user would configure it:
    verified TLS (the CA bundle), the password in a file, the appliance as copy `appliance`
    and its offsite replication as copy `cloud`, and one system (with its runbook) per
    `per_system` data sources, named explicitly (each an expected data source)."""
    import tomli_w

    runbooks = work / "runbooks"
    runbooks.mkdir(parents=True, exist_ok=True)
    systems = []
    for n, start in enumerate(range(0, len(sources), per_system)):
        system = f"hourly{n:02d}"
        systems.append({"system": system, "data_sources": sources[start:start + per_system]})
        (runbooks / f"{system}.toml").write_text(tomli_w.dumps(
            {"name": f"Hourly servers {n:02d}", "tier": 2, "owner": "Network Administrator", "rto": "8h",
             "rpo": "26h", "mtd": "2d"}))
    (work / "imap-password").write_text(PASSWORD + "\n")
    path = work / "drcheck.toml"
    path.write_text(tomli_w.dumps({
        "agent": {"name": "bench", "state_dir": str(work / "state"), "sandbox_root": str(work / "sandbox"),
                  "runbooks_dir": str(runbooks), "timezone": "UTC"},
        "metrics": {"enabled": False},
        "sites": {"office": {"description": "server room"}, "cloud": {"description": "Barracuda Cloud"}},
        "copies": {"appliance": {"site": "office", "media": "appliance"}, "cloud": {"site": "cloud", "media": "cloud"}},
        "probes": {PROBE: {"kind": "barracuda", "copy": "appliance", "offsite_copy": "cloud", "host": server.host,
                           "port": server.port, "username": USER, "password": {"file": str(work / "imap-password")},
                           "ca_bundle": str(server.tls.ca), "call_timeout": "2m", "systems": systems}},
    }))
    return path


# -- reporting -------------------------------------------------------------------------


# -- the run ---------------------------------------------------------------------------


@dataclass
class Lab:
    """The server, the sources' names, and a fresh probe configuration per round."""

    work: Path
    server: object
    sources: list[str]
    per_system: int
    rounds: int = 0

    def fresh(self):
        """(loaded, Store) of a new configuration with an empty store."""
        from drcheck.config_loader import load
        from drcheck.store import Store

        self.rounds += 1
        work = self.work / f"drcheck{self.rounds}"
        loaded = load(write_config(work, self.server, self.sources, self.per_system))
        return loaded, Store(loaded.database_path)


@dataclass
class Rounds:
    times: dict[str, list[float]] = field(default_factory=lambda: {"probe": [], "imapclient": [], "imaplib": []})
    sessions: dict[str, Session] = field(default_factory=dict)  # each side's last session, as Dovecot logged it
    result: object = None
    keep: tuple | None = None  # (loaded, store) of the last probe round: the incremental runs continue it


def checked_session(server, seen: int, side: str) -> Session:
    found = sessions(server)[seen:]
    if len(found) != 1:
        raise RuntimeError(f"{side}: expected one IMAP session in Dovecot's log, found {len(found)}")
    return found[0]


def first_runs(args, lab: Lab) -> Rounds:
    """`args.repeat` rounds of: the probe into an empty store, the plain imapclient fetch and
    the imaplib floor, alternating order."""
    from drcheck.results import Status

    rounds = Rounds()
    order = ["probe", "imapclient", "imaplib"]
    for n in range(args.repeat):
        for side in (order if n % 2 == 0 else order[::-1]):
            seen = len(sessions(lab.server))
            if side == "probe":
                loaded, store = lab.fresh()
                seconds, result = time_probe(loaded, store, PROBE, ACTION)
                if result.status is not Status.OK:
                    store.close()
                    raise RuntimeError(f"first run {n + 1}: {result.status.value} {result.reason}")
                if rounds.keep:
                    rounds.keep[1].close()
                rounds.keep, rounds.result = (loaded, store), result
            else:
                seconds, count, size = plain_fetch(lab.server, raw=side == "imaplib")
            rounds.times[side].append(seconds)
            rounds.sessions[side] = checked_session(lab.server, seen, side)
            if side != "probe" and (rounds.sessions[side].body_count, rounds.sessions[side].body_bytes) != (count,
                                                                                                           size):
                raise RuntimeError(f"{side}: read {count} messages ({size} bytes) but Dovecot sent "
                                   f"{rounds.sessions[side]}")
    return rounds


def incremental_runs(args, lab: Lab, rounds: Rounds, gen, start: datetime) -> tuple[list[float], list[float]]:
    """`args.repeat` rounds of: deliver `args.new` messages, then the probe (continuing the
    last first run's store) and the plain fetch of the new UIDs, alternating order.
    Returns (probe times, plain times)."""
    from drcheck.results import Status

    loaded, store = rounds.keep
    probe_times, plain_times = [], []
    for n in range(args.repeat):
        above = last_uid(lab.server)
        lab.server.deliver(USER, gen.bulk(args.new, start + timedelta(hours=n + 1)))
        for side in (["probe", "plain"] if n % 2 == 0 else ["plain", "probe"]):
            seen = len(sessions(lab.server))
            if side == "probe":
                seconds, result = time_probe(loaded, store, PROBE, ACTION)
                read = result.details.get("run", {}).get("read")
                if result.status is not Status.OK or read != args.new:
                    raise RuntimeError(f"incremental run {n + 1}: {result.status.value} {result.reason} "
                                       f"(read {read} of {args.new} new)")
                probe_times.append(seconds)
            else:
                seconds, count, _ = plain_fetch(lab.server, above=above, raw=True)
                if count != args.new:
                    raise RuntimeError(f"plain incremental fetch {n + 1} read {count} of {args.new} new")
                plain_times.append(seconds)
            session = checked_session(lab.server, seen, side)
            if session.body_count != args.new:
                raise RuntimeError(f"incremental {side} {n + 1}: Dovecot sent {session.body_count} messages, "
                                   f"not the {args.new} new ones")
    store.close()
    return probe_times, plain_times


def check_first_runs(args, rounds: Rounds, total_bytes: int) -> None:
    """Every side fetched every message, the same bytes; the probe read them all as reports."""
    expected = Session(args.messages, total_bytes)
    for side, session in rounds.sessions.items():
        if session != expected:
            raise RuntimeError(f"{side}: Dovecot sent {session.body_count} messages ({session.body_bytes} bytes), "
                               f"the mailbox holds {expected.body_count} ({expected.body_bytes} bytes)")
    run = rounds.result.details.get("run", {})
    if run.get("read") != args.messages or run.get("report") != args.messages:
        raise RuntimeError(f"the probe read {run.get('read')} messages, {run.get('report')} as reports, "
                           f"of {args.messages}")


def profile(lab: Lab) -> None:
    """Print where one first run spends its time."""
    loaded, store = lab.fresh()
    with store:
        print_profile(lambda: time_probe(loaded, store, PROBE, ACTION)[0], "one first run",
                      "the fetch runs in a helper thread cProfile does not see")


def measure(args, work: Path, server) -> list[Figure]:
    from drcheck.results import Status

    gen = generator()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = now - timedelta(hours=args.repeat + 2)  # the incremental batches come after, all in the past
    t0 = time.perf_counter()
    messages = gen.bulk(args.messages, start)
    total_bytes = sum(len(m) for m in messages)
    server.deliver(USER, messages)
    sources = sorted({name for name in re.findall(rb"Data Source: (\S+)", b"".join(messages[:200]))})
    sources = [s.decode() for s in sources]
    print(f"  {args.messages:,} report messages ({total_bytes / 1e6:.1f} MB, {len(sources)} data sources) generated "
          f"and delivered in {time.perf_counter() - t0:.1f}s", flush=True)
    lab = Lab(work, server, sources, args.per_system)
    # untimed: Dovecot indexes the delivered messages at the first open; the first probe run
    # imports and compiles what it needs
    seconds, count, _ = plain_fetch(server, raw=True)
    loaded, store = lab.fresh()
    with store:
        warm, result = time_probe(loaded, store, PROBE, ACTION)
    if result.status is not Status.OK:
        raise RuntimeError(f"the probe could not read the mailbox: {result.status.value} {result.reason}")
    print(f"  warm-up (not timed): first open and fetch {seconds:.2f}s ({count:,} messages); first probe run "
          f"{warm:.2f}s - {result.reason}; {len(result.newest)} system points, {len(result.findings)} findings",
          flush=True)

    rounds = first_runs(args, lab)
    check_first_runs(args, rounds, total_bytes)
    inc_probe, inc_plain = incremental_runs(args, lab, rounds, gen, start)

    best = {side: min(times) for side, times in rounds.times.items()}
    ratio, floor_ratio = best["probe"] / best["imapclient"], best["probe"] / best["imaplib"]
    inc_best = min(inc_probe)
    share = inc_best / best["probe"]
    for side, times in rounds.times.items():
        print(f"  first-run rounds, {side} (s): {fmt_times(times)}")
    print(f"  incremental rounds (s): probe {fmt_times(inc_probe)}; plain fetch of the new UIDs {fmt_times(inc_plain)}")
    print(f"  each timed session sent {args.messages:,} messages, {total_bytes:,} body bytes (Dovecot's log)")
    print()
    print(f"Barracuda mailbox, {args.messages:,} report messages (best of {args.repeat} alternating rounds)")
    print(f"  drcheck probe, first run (run_probe mailbox: fetch, parse, state, store)  {best['probe']:7.2f}s")
    print(f"  plain imapclient fetch (LOGIN, EXAMINE, UID SEARCH, UID FETCH)          {best['imapclient']:7.2f}s")
    print(f"  ratio {ratio:.2f}x   goal <= {FIRST_GOAL}x   {verdict(ratio <= FIRST_GOAL)}")
    print(f"  imaplib raw UID FETCH (the floor, information)                         {best['imaplib']:7.2f}s  "
          f"({floor_ratio:.2f}x)")
    print(f"  incremental run after {args.new} new messages                              {inc_best:7.3f}s")
    print(f"  {100 * share:.1f}% of the first run   goal < {100 * INCREMENTAL_GOAL:.0f}%   "
          f"{verdict(share < INCREMENTAL_GOAL)}   (plain fetch of the {args.new}: {min(inc_plain):.3f}s)")
    floor = min(inc_plain) / best["probe"]
    print(f"  the server's floor: a plain session fetching the {args.new} new is {100 * floor:.1f}% of the first run "
          f"by itself; drcheck's own share {100 * max(inc_best - min(inc_plain), 0) / best['probe']:.1f}%")
    label = f"({args.messages} messages)"
    figures = [
        Figure(f"barracuda mailbox first run vs plain imapclient fetch {label}", best["probe"], best["imapclient"],
               ratio, f"<= {FIRST_GOAL}x", ratio <= FIRST_GOAL),
        Figure(f"barracuda mailbox first run vs imaplib raw fetch {label}", best["probe"], best["imaplib"],
               floor_ratio, None, None),
        Figure(f"barracuda mailbox incremental run after {args.new} new vs first run {label}", inc_best,
               best["probe"], share, f"< {100 * INCREMENTAL_GOAL:.0f}%", share < INCREMENTAL_GOAL),
        Figure(f"barracuda plain session fetching the {args.new} new vs first run {label}", min(inc_plain),
               best["probe"], floor, None, None),
    ]
    if ratio > FIRST_GOAL or share >= INCREMENTAL_GOAL or args.profile:
        profile(lab)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="report messages in the mailbox (default 10000)")
    parser.add_argument("--new", type=int, default=10, help="new messages before each incremental run (default 10)")
    parser.add_argument("--per-system", type=int, default=5, help="data sources per configured system (default 5)")
    add_common_arguments(parser, profile="one first run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from drcheck.lab_imap import DovecotError
    from drcheck.lab_vcsim import VcsimError, make_test_ca

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="drcheck-bench-barracuda-", dir=args.tmpdir) as tmp:
        work = Path(tmp).resolve()
        try:
            server = start_dovecot(work, make_test_ca(work / "ca"))
        except (DovecotError, VcsimError) as exc:
            print(f"bench: Dovecot could not start: {exc}", file=sys.stderr)
            return 1
        try:
            print(f"Dovecot ready in {server.startup_seconds:.1f}s (IMAPS 127.0.0.1:{server.port})", flush=True)
            figures = measure(args, work, server)
        except (DovecotError, RuntimeError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        finally:
            server.stop()
    emit(args.rows, [f.row() for f in figures])
    print(f"\n  benchmark wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Veeam benchmark: drcheck's `points` probe action against the project's Veeam B&R REST
replay (`drcheck/lab_veeam.py`, `tests/peers/veeam`) holding `--vms` VMs x `--points`
restore points (default 1,000 x 30, plus a backup copy job per backup job with as many:
60,000 points), served over verified TLS (a throwaway test CA).

drcheck's side: `drcheck.engine.run_probe(loaded, store, "veeam", "points")`, in-process,
timed end to end (token, the paged listings of jobs, backups and restore points, decoding,
the clean-point view per VM, system and copy, assets and findings, the store transaction).
The first run, into an empty store, is not timed; the timed runs are the agent's steady
state.

Baseline: the same HTTP requests without drcheck, on a plain `httpx.Client` verifying the
same CA: the password-grant token, then every page (`skip`/`limit`, the probe's page size)
of `/api/v1/jobs`, `/api/v1/backups` and `/api/v1/restorePoints`, each page's JSON decoded.
Nothing else: this is the floor of any reader of these listings.

Honesty checks (exit 1 when one fails): the replay's request log must show both sides
sending the same requests (method, path and query, the token request aside from its
body), and both must have read every restore point the replay holds. Goal: the probe
<= 1.3x the raw GETs, best of `--repeat` alternating rounds. No wall-clock assertions. On a
MISS (or with `--profile`) a cProfile of one probe run shows where its time goes.

    .venv/bin/python bench/bench_veeam.py [--vms 1000] [--points 30] [--repeat 5] [--page-size 200] [--profile]
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figure, add_common_arguments, fmt_times, print_profile, time_probe, verdict  # noqa: E402
from rows import emit  # noqa: E402

GOAL = 1.3  # probe / raw paginated GETs, at most
PROBE = "veeam"
ACTION = "points"
LISTINGS = ("/api/v1/jobs", "/api/v1/backups", "/api/v1/restorePoints")  # what `points` pages through
VMS_PER_SYSTEM = 100  # systems rules: one system per backup job's 100 VMs (vm00??, vm01??...)


# -- the lab ---------------------------------------------------------------------------


def start_replay(work: Path, tls, vms: int, points: int):
    """A started replay serving `large_scenario(vms, points)` (with its backup copy jobs)
    over TLS with `tls` (a `make_test_ca` certificate)."""
    from drcheck.lab_veeam import VeeamReplay, large_scenario

    t0 = time.perf_counter()
    replay = VeeamReplay(work / "replay", scenario=large_scenario(vms=vms, points=points), tls=tls,
                         start_timeout=120).start()
    replay.startup_seconds = time.perf_counter() - t0
    return replay


def write_config(work: Path, replay, vms: int, page_size: int) -> Path:
    """A drcheck.toml whose probe `veeam` reads `replay` as a user would configure it:
    verified TLS (the CA bundle), the password in a file, the backup jobs' backups as copy
    `local`, every `Backup Copy Job NN` as copy `offsite`, and one system (with its
    runbook) per 100 VMs, so the clean-point view per system runs over every VM."""
    import tomli_w

    from drcheck.lab_veeam import large_scenario

    scenario = large_scenario(vms=vms, points=1)  # only the names are used
    copy_jobs = {job["name"]: "offsite" for job in scenario["jobs"] if job.get("type") == "BackupCopy"}
    names = [vm["name"] for vm in scenario["vms"]]
    width = len(names[0]) - 2  # "vm" + digits
    systems = []
    runbooks = work / "runbooks"
    runbooks.mkdir(parents=True, exist_ok=True)
    for n, start in enumerate(range(0, vms, VMS_PER_SYSTEM)):
        system = f"group{n:02d}"
        chunk = names[start:start + VMS_PER_SYSTEM]
        systems.append({"system": system, "vms": chunk if len(chunk) < VMS_PER_SYSTEM or width < 3
                        else [f"vm{start // VMS_PER_SYSTEM:0{width - 2}d}??"]})
        (runbooks / f"{system}.toml").write_text(tomli_w.dumps(
            {"name": f"Servers {n:02d}", "tier": 2, "owner": "Network Administrator", "rto": "8h", "rpo": "26h",
             "mtd": "2d"}))
    (work / "veeam-password").write_text(replay.password + "\n")
    path = work / "drcheck.toml"
    path.write_text(tomli_w.dumps({
        "agent": {"name": "bench", "state_dir": str(work / "state"), "sandbox_root": str(work / "sandbox"),
                  "runbooks_dir": str(runbooks), "timezone": "UTC"},
        "metrics": {"enabled": False},
        "sites": {"office": {"description": "server room"}, "dr": {"description": "second site", "distance_km": 15}},
        "copies": {"local": {"site": "office"}, "offsite": {"site": "dr"}},
        "probes": {PROBE: {"kind": "veeam", "copy": "local", "url": replay.url, "username": replay.username,
                           "password": {"file": str(work / "veeam-password")}, "ca_bundle": str(replay.tls.ca),
                           "page_size": page_size, "call_timeout": "2m", "copy_jobs": copy_jobs,
                           "systems": systems}},
    }))
    return path


# -- the two sides -----------------------------------------------------------------------


@dataclass
class Raw:
    """What the raw side read: items per listing and the requests it sent."""

    items: dict[str, int] = field(default_factory=dict)
    requests: int = 0


def raw_gets(replay, page_size: int, api_version: str) -> tuple[float, Raw]:
    """The baseline: a fresh httpx.Client (verified TLS, the same CA), the password-grant
    token, then every page of each listing the probe reads, in the probe's order, each
    page's JSON decoded; paging stops as the probe's does (`skip >= pagination.total`, an
    empty page, or a short page without a total). Returns (seconds, what was read)."""
    import httpx

    from drcheck.clients.veeam import TOKEN_PATH

    raw = Raw()
    t0 = time.perf_counter()
    with httpx.Client(base_url=replay.url, verify=ssl.create_default_context(cafile=str(replay.tls.ca)),
                      timeout=120, headers={"Accept": "application/json", "x-api-version": api_version}) as http:
        answer = http.post(TOKEN_PATH, data={"grant_type": "password", "username": replay.username,
                                             "password": replay.password})
        answer.raise_for_status()
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        raw.requests = 1
        for path in LISTINGS:
            skip, read = 0, 0
            while True:
                response = http.get(path, params={"skip": skip, "limit": page_size}, headers=headers)
                response.raise_for_status()
                raw.requests += 1
                body = response.json()
                data = body.get("data") or []
                read += len(data)
                skip += len(data)
                total = (body.get("pagination") or {}).get("total")
                if not data or (total is not None and skip >= total) or (total is None and len(data) < page_size):
                    break
            raw.items[path] = read
    return time.perf_counter() - t0, raw


def request_pattern(log: list[dict]) -> Counter:
    """The replay's request log as a multiset of (method, path, query)."""
    def query(q) -> str:
        if isinstance(q, dict):
            return "&".join(f"{k}={v}" for k, v in sorted(q.items()))
        return "&".join(sorted(str(q or "").split("&")))

    return Counter((r["method"], r["path"], query(r.get("query"))) for r in log)


def server_seconds(log: list[dict]) -> float:
    """The replay's own time answering the logged requests (its `ms` per request)."""
    return sum(r.get("ms") or 0 for r in log) / 1000


# -- reporting -------------------------------------------------------------------------


# -- the run ---------------------------------------------------------------------------


@dataclass
class Rounds:
    probe_times: list[float] = field(default_factory=list)
    raw_times: list[float] = field(default_factory=list)
    logs: dict[str, list[dict]] = field(default_factory=dict)  # the replay's request log of each side's last round
    result: object = None
    raw: Raw | None = None


def alternate(args, loaded, store, replay) -> Rounds:
    """`args.repeat` rounds of the probe and the raw GETs, alternating which goes first;
    the replay's request log is reset before each side and kept for its last round."""
    from drcheck.results import Status

    api_version = loaded.config.probes[PROBE].api_version
    rounds = Rounds()
    for n in range(args.repeat):
        for side in (["probe", "raw"] if n % 2 == 0 else ["raw", "probe"]):
            replay.control("/requests/reset", {})
            if side == "probe":
                seconds, rounds.result = time_probe(loaded, store, PROBE, ACTION)
                if rounds.result.status is not Status.OK:
                    raise RuntimeError(f"probe run {n + 1}: {rounds.result.status.value} {rounds.result.reason}")
                rounds.probe_times.append(seconds)
            else:
                seconds, rounds.raw = raw_gets(replay, args.page_size, api_version)
                rounds.raw_times.append(seconds)
            rounds.logs[side] = replay.requests()
    return rounds


def check_same_work(rounds: Rounds, expected_points: int) -> None:
    """Raise RuntimeError unless both sides sent the same requests and read every point."""
    probe, raw = request_pattern(rounds.logs["probe"]), request_pattern(rounds.logs["raw"])
    if probe != raw:
        only = lambda a, b: sorted((a - b).elements())[:5]  # noqa: E731
        raise RuntimeError(f"the two sides did not send the same requests: probe only {only(probe, raw)}, "
                           f"raw only {only(raw, probe)}")
    read = rounds.result.details.get("restore_points")
    if read != expected_points or rounds.raw.items.get("/api/v1/restorePoints") != expected_points:
        raise RuntimeError(f"not every restore point was read: probe {read}, raw "
                           f"{rounds.raw.items.get('/api/v1/restorePoints')}, replay {expected_points}")


def measure(args, work: Path, replay) -> list[Figure]:
    from drcheck.config_loader import load
    from drcheck.results import Status
    from drcheck.store import Store

    health = replay.control("/health")
    config = write_config(work, replay, args.vms, args.page_size)
    loaded = load(config)
    with Store(loaded.database_path) as store:
        first, result = time_probe(loaded, store, PROBE, ACTION)
        if result.status is not Status.OK:
            raise RuntimeError(f"the probe did not read the server: {result.status.value} {result.reason}")
        print(f"  first probe run (empty store, {len(result.assets):,} assets new, not timed): {first:.2f}s "
              f"- {result.reason}; {len(result.newest)} system points, {len(result.findings)} findings",
              flush=True)
        rounds = alternate(args, loaded, store, replay)
        check_same_work(rounds, health["restore_points"])
        figures = report(args, health, rounds)
        if not figures[0].met or args.profile:
            print_profile(lambda: time_probe(loaded, store, PROBE, ACTION)[0], "one probe run")
    return figures


def report(args, health: dict, rounds: Rounds) -> list[Figure]:
    probe_best, raw_best = min(rounds.probe_times), min(rounds.raw_times)
    ratio = probe_best / raw_best
    requests = len(rounds.logs["raw"])
    points = health["restore_points"]
    print(f"  probe rounds (s): {fmt_times(rounds.probe_times)}; raw GET rounds (s): {fmt_times(rounds.raw_times)}")
    for side in ("probe", "raw"):
        log = rounds.logs[side]
        per_path = Counter(r["path"] for r in log)
        print(f"  requests of one {side} round: {len(log)} ({', '.join(f'{p} {c}' for p, c in per_path.items())}); "
              f"the replay's own time answering them {server_seconds(log):.2f}s")
    print()
    print(f"Veeam restore points, {args.vms:,} VMs x {args.points} points x 2 copies = {points:,} points, "
          f"{requests} requests of {args.page_size} (best of {args.repeat} alternating rounds)")
    print(f"  drcheck probe (run_probe points: token, pages, clean points, store)  {probe_best:7.2f}s")
    print(f"  raw paginated GETs (httpx: token, the same pages, JSON decoded)     {raw_best:7.2f}s")
    print(f"  ratio {ratio:.2f}x   goal <= {GOAL}x   {verdict(ratio <= GOAL)}")
    label = f"({args.vms} VMs x {args.points} points)"
    return [Figure(f"veeam points probe vs raw paginated GETs {label}", probe_best, raw_best, ratio,
                   f"<= {GOAL}x", ratio <= GOAL)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=1000, help="VMs in the replay (default 1000)")
    parser.add_argument("--points", type=int, default=30, help="restore points per VM and copy (default 30)")
    parser.add_argument("--page-size", type=int, default=200,
                        help="items per page, both sides (default 200, the probe's default)")
    add_common_arguments(parser, profile="one probe run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from drcheck.lab_vcsim import VcsimError, make_test_ca
    from drcheck.lab_veeam import VeeamReplayError

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="drcheck-bench-veeam-", dir=args.tmpdir) as tmp:
        work = Path(tmp).resolve()
        try:
            replay = start_replay(work, make_test_ca(work / "ca"), args.vms, args.points)
        except (VcsimError, VeeamReplayError) as exc:
            print(f"bench: the Veeam replay could not start: {exc}", file=sys.stderr)
            return 1
        try:
            health = replay.control("/health")
            print(f"Veeam replay with {health['vms']:,} VMs, {health['jobs']} jobs, {health['restore_points']:,} "
                  f"restore points ready in {replay.startup_seconds:.1f}s ({replay.url})", flush=True)
            figures = measure(args, work, replay)
        except (VeeamReplayError, RuntimeError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        finally:
            replay.stop()
    emit(args.rows, [f.row() for f in figures])
    print(f"\n  benchmark wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

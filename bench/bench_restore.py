"""Restore-test benchmark: drcheck's file restore test vs plain `restic restore` + `sha256sum -c`,
and vs `restic restore` alone (the tool's own floor).

Like for like: both sides restore the same snapshot of the same source tree and hash every
file. Floor: drcheck's restore test as a user would configure it (default spot check,
completeness, an expected path; no canary) against `restic restore` alone of the same
snapshot. All four run in each round, on one machine; rounds alternate their order (page
caches are not dropped between runs, so order effects are spread evenly instead) and
medians are compared. The figures are ratios printed beside the goals, with where
drcheck's time went (from the timeline each result keeps in its details); nothing asserts
on wall-clock time. The script exits non-zero only when the benchmark could not run or a
drcheck restore test did not pass (a benchmark of a failing test would be meaningless).

    .venv/bin/python bench/bench_restore.py [--mb 150] [--rounds 5] [--layout nested|flat]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402

GOAL = 1.2
FLOOR_GOAL = 1.3
WORDS = ("enrollment attendance grade roster schedule budget invoice lunch bus library staff "
         "payroll ledger transcript referral vendor warrant levy bond audit").split()


# -- the lab -----------------------------------------------------------------------------

def make_source(root: Path, megabytes: float, flat: bool = False, seed: int = 1) -> tuple[int, int]:
    """Create a tree of mixed file sizes totalling ~`megabytes` MB; return (files, bytes).

    Files sit three directories deep (dept/year/batch), or all directly in `root` when
    `flat` (see --layout).

    Mostly small files with a long tail of large ones (like a file share): 70 % are
    1-32 KiB, 25 % 32 KiB-1 MiB, 5 % 1-12 MiB, then all sizes are scaled to the target.
    One file in five is compressible text, the rest random bytes.
    """
    rng = random.Random(seed)
    target = int(megabytes * 1024 * 1024)
    count = max(50, int(megabytes * 20))  # 150 MB -> 3,000 files
    sizes = []
    for _ in range(count):
        r = rng.random()
        if r < 0.70:
            sizes.append(rng.randint(1 << 10, 32 << 10))
        elif r < 0.95:
            sizes.append(rng.randint(32 << 10, 1 << 20))
        else:
            sizes.append(rng.randint(1 << 20, 12 << 20))
    scale = target / sum(sizes)
    sizes = [max(1, int(s * scale)) for s in sizes]
    text_block = (" ".join(rng.choices(WORDS, k=20000)) + "\n").encode()
    total = 0
    for n, size in enumerate(sizes):
        directory = root if flat else root / f"dept{n % 12:02d}" / f"year{20 + n % 5}" / f"batch{n % 7}"
        directory.mkdir(parents=True, exist_ok=True)
        if n % 5 == 0:
            start = rng.randrange(len(text_block))
            body = (text_block * (size // len(text_block) + 2))[start:start + size]
            (directory / f"doc-{n:05d}.txt").write_bytes(body)
        else:
            (directory / f"blob-{n:05d}.bin").write_bytes(rng.randbytes(size))
        total += size
    return count, total


def restic_env(repo: Path, password_file: Path, cache_dir: Path) -> dict[str, str]:
    # The same minimal environment drcheck gives restic (drcheck.clients.process.run),
    # and the same cache directory, so neither side gets a warmer or colder restic cache.
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    env.update(RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD_FILE=str(password_file),
               RESTIC_CACHE_DIR=str(cache_dir))
    return env


def sh(argv, *, env=None, cwd=None, stdout=subprocess.DEVNULL) -> None:
    done = subprocess.run(argv, env=env, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, argv[:3]))} failed (exit {done.returncode}): "
                         f"{done.stderr.decode(errors='replace').strip()[-400:]}")


CONFIG = """\
[agent]
name = "bench"
state_dir = "state"
sandbox_root = "sandbox"
runbooks_dir = "runbooks"
job_timeout = "1h"

[sites.bench]
description = "benchmark host"

[copies.bench-restic]
site = "bench"

[probes.bench-restic]
kind = "restic"
copy = "bench-restic"
repository = "repo"
password = {{ file = "restic-password" }}
restic_command = "{restic}"

[[probes.bench-restic.systems]]
system = "benchsys"
hosts = ["bench01"]
paths = ["{source}"]

[restore_tests.bench-files]
kind = "files"
probe = "bench-restic"
system = "benchsys"
expected_paths = ["{expected}"]
spot_check = {{ files = 0, percent = 100 }}

# as a user would configure it: default spot check and completeness, no canary
[restore_tests.bench-floor]
kind = "files"
probe = "bench-restic"
system = "benchsys"
expected_paths = ["{expected}"]
"""

RUNBOOK = """\
name = "Benchmark system"
tier = 2
owner = "bench"
rto = "1d"
rpo = "1d"
mtd = "3d"
"""


def build_lab(work: Path, megabytes: float, restic: str, flat: bool) -> dict:
    source = work / "source"
    t0 = time.perf_counter()
    files, size = make_source(source, megabytes, flat)
    expected = "doc-00000.txt" if flat else "dept00/year20/batch0/doc-00000.txt"
    made = time.perf_counter() - t0
    password = work / "restic-password"
    password.write_text("bench-" + os.urandom(12).hex() + "\n")
    os.chmod(password, 0o600)
    repo, cache = work / "repo", work / "cache" / "drcheck" / "restic"
    env = restic_env(repo, password, cache)
    t0 = time.perf_counter()
    sh([restic, "init"], env=env)
    sh([restic, "backup", "--quiet", "--host", "bench01", str(source)], env=env)
    snap = subprocess.run([restic, "snapshots", "--json", "--latest", "1"], env=env,
                          capture_output=True, check=True).stdout
    import json

    snapshot_id = json.loads(snap)[-1]["id"]
    backed = time.perf_counter() - t0
    (work / "runbooks").mkdir()
    (work / "runbooks" / "benchsys.toml").write_text(RUNBOOK)
    (work / "drcheck.toml").write_text(CONFIG.format(source=source, restic=restic, expected=expected))
    return {"source": source, "files": files, "bytes": size, "env": env, "snapshot": snapshot_id,
            "make_seconds": made, "backup_seconds": backed, "cache": cache}


COVERAGE_HINT = (
    "\nbench: drcheck listed or hashed fewer files than the snapshot holds, so the two sides "
    "would not do the same work and no figures are printed. (One known cause: restic 0.14's "
    "`restic ls <id> <dir>` lists only the direct children of <dir> without --recursive; "
    "see ResticRepository.ls in drcheck/clients/restic.py.)")


# -- the two sides -----------------------------------------------------------------------

def run_drcheck(loaded, store, test: str = "bench-files") -> dict:
    from drcheck.engine import run_restore_test
    from drcheck.results import Status

    t0 = time.perf_counter()
    result = run_restore_test(loaded, store, test)
    total = time.perf_counter() - t0
    if result.status is not Status.PASSED:
        raise SystemExit(f"bench: drcheck restore test {test} {result.status.value}: {result.reason}"
                         f" ({result.files_restored} file(s) listed in the snapshot){COVERAGE_HINT}")
    spot = next(c for c in result.checks if c.name == "spot_check")
    return {"total": total, "restore": result.restore_seconds, "verify": result.verify_seconds,
            "files": result.files_restored, "sampled": spot.details.get("sampled"),
            "eligible": spot.details.get("eligible"), "phases": phases(result, total),
            "overlap": result.details.get("overlap", "")}


PHASES = (
    ("snapshots", "restic snapshots (newest point)"),
    ("listing", "restic ls (listing, checked)"),
    ("until_restore", "test start -> restore start"),
    ("restore", "restic restore"),
    ("after_restore", "restore end -> verify start"),
    ("verify", "checks after the restore"),
    ("cleanup", "sandbox removal"),
    ("engine", "engine: reap, lock, store writes"),
)


def phases(result, total: float) -> dict:
    """Where one run's time went, from the timeline drcheck keeps in the result's details
    (spans may overlap: snapshots and ls run concurrently, and with the restore)."""
    spans = result.details.get("timeline", {})

    def length(name):
        return spans[name][1] - spans[name][0] if name in spans else 0.0

    restore, verify = spans.get("restore", [0, 0]), spans.get("verify", [0, 0])
    return {"snapshots": length("snapshots"), "listing": length("listing"), "restore": length("restore"),
            "verify": length("verify"), "cleanup": length("cleanup"), "until_restore": restore[0],
            "after_restore": max(0.0, verify[0] - restore[1]),
            "engine": total - (result.finished_at - result.started_at).total_seconds()}


def run_restic_alone(lab: dict, work: Path, restic: str, round_no: int) -> dict:
    """`restic restore <id> --target DIR` alone: the floor of any restore test."""
    target = work / f"floor-restore-{round_no}"
    t0 = time.perf_counter()
    sh([restic, "restore", lab["snapshot"], "--target", str(target)], env=lab["env"])
    elapsed = time.perf_counter() - t0
    shutil.rmtree(target)  # not timed: plain restic leaves its restore behind
    return {"restore": elapsed}


def run_baseline(lab: dict, work: Path, restic: str, round_no: int) -> dict:
    """sha256sum the live source into a manifest, `restic restore`, `sha256sum -c` it."""
    manifest = work / f"manifest-{round_no}.sha256"
    target = work / f"baseline-restore-{round_no}"
    t0 = time.perf_counter()
    with open(manifest, "wb") as out:
        sh(["bash", "-c", "find . -type f -print0 | xargs -0 sha256sum"], cwd=lab["source"], stdout=out)
    t1 = time.perf_counter()
    sh([restic, "restore", lab["snapshot"], "--target", str(target)], env=lab["env"])
    t2 = time.perf_counter()
    restored_root = target.joinpath(*lab["source"].parts[1:])
    sh(["sha256sum", "--check", "--quiet", "--strict", str(manifest)], cwd=restored_root)
    t3 = time.perf_counter()
    lines = sum(1 for _ in open(manifest, "rb"))
    shutil.rmtree(target)  # not timed: plain restic leaves its restore behind
    return {"manifest": t1 - t0, "restore": t2 - t1, "check": t3 - t2, "files": lines}


# -- reporting ---------------------------------------------------------------------------

def verdict(ratio: float) -> str:
    return "PASS" if ratio <= GOAL else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=150, help="size of the source tree (default 150)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each side (default 5)")
    parser.add_argument("--layout", choices=("nested", "flat"), default="nested",
                        help="nested: files three directories deep (default); flat: all files "
                             "directly in the source path")
    parser.add_argument("--restic", default=shutil.which("restic") or "restic")
    parser.add_argument("--tmpdir", default=None, help="where to build the lab (default: $TMPDIR)")
    parser.add_argument("--rows", default=os.environ.get("DRCHECK_BENCH_ROWS"),
                        help="append result rows (JSON lines) to this file (run_all.py sets it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for tool in (args.restic, "sha256sum", "bash", "find", "xargs"):
        if not shutil.which(tool):
            print(f"bench: {tool} not found", file=sys.stderr)
            return 2

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="drcheck-bench-restore-", dir=args.tmpdir) as tmp:
        work = Path(tmp).resolve()
        # drcheck's restic client puts its cache under $XDG_CACHE_HOME/drcheck/restic;
        # point it at the lab so both sides share one cache (the baseline uses the same path).
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        print(f"building lab in {work} ...", flush=True)
        lab = build_lab(work, args.mb, args.restic, args.layout == "flat")
        print(f"  source: {lab['files']:,} files, {lab['bytes'] / 1e6:.1f} MB "
              f"(made in {lab['make_seconds']:.1f}s); backup + snapshot {lab['snapshot'][:8]} "
              f"in {lab['backup_seconds']:.1f}s", flush=True)

        from drcheck.config_loader import load
        from drcheck.engine import open_store

        loaded = load(work / "drcheck.toml")
        store = open_store(loaded)
        # In production the scheduled probe has already recorded the newest restore point;
        # run it once, untimed, so the restore test starts from the same state.
        from drcheck.engine import run_probe

        probe_name = next(iter(loaded.config.probes))
        probe = run_probe(loaded, store, probe_name)
        print(f"  probe {probe_name} (untimed, as the agent's schedule would): {probe.status.value} "
              f"in {probe.duration_seconds:.2f}s", flush=True)
        drc, base, floor, alone = [], [], [], []
        try:
            for n in range(args.rounds):
                order = ["drcheck", "baseline", "floor", "alone"]
                for side in order if n % 2 == 0 else order[::-1]:
                    if side == "drcheck":
                        drc.append(run_drcheck(loaded, store))
                        d = drc[-1]
                        print(f"  round {n + 1} drcheck : {d['total']:.2f}s (restore {d['restore']:.2f}s, "
                              f"verify {d['verify']:.2f}s, {d['sampled']}/{d['files']} files hashed)", flush=True)
                    elif side == "baseline":
                        base.append(run_baseline(lab, work, args.restic, n))
                        b = base[-1]
                        print(f"  round {n + 1} baseline: manifest {b['manifest']:.2f}s, restore "
                              f"{b['restore']:.2f}s, sha256sum -c {b['check']:.2f}s ({b['files']} files)",
                              flush=True)
                    elif side == "floor":
                        floor.append(run_drcheck(loaded, store, "bench-floor"))
                        d = floor[-1]
                        print(f"  round {n + 1} drcheck as configured: {d['total']:.2f}s (restore {d['restore']:.2f}s, "
                              f"verify {d['verify']:.2f}s, {d['sampled']} files hashed; overlap {d['overlap']})",
                              flush=True)
                    else:
                        alone.append(run_restic_alone(lab, work, args.restic, n))
                        print(f"  round {n + 1} restic restore alone: {alone[-1]['restore']:.2f}s", flush=True)
            # Not part of either figure: what one restic invocation costs before it does any
            # work (opening the repository derives the key with scrypt). drcheck's test makes
            # three calls (snapshots, ls, restore), the baseline one.
            call_cost = []
            for _ in range(3):
                t0 = time.perf_counter()
                sh([args.restic, "--no-lock", "cat", "config"], env=lab["env"])
                call_cost.append(time.perf_counter() - t0)
        finally:
            store.close()

    for d in drc:
        if d["sampled"] != lab["files"] or d["files"] != lab["files"]:
            print(f"bench: drcheck listed {d['files']} and hashed {d['sampled']} file(s); the "
                  f"snapshot holds {lab['files']}{COVERAGE_HINT}", file=sys.stderr)
            return 1
    if any(b["files"] != lab["files"] for b in base):
        print("bench: the baseline manifest does not cover every file", file=sys.stderr)
        return 1

    med = statistics.median
    d_total = med(d["total"] for d in drc)
    d_restore = med(d["restore"] for d in drc)
    d_verify = med(d["verify"] for d in drc)
    b_full = med(b["manifest"] + b["restore"] + b["check"] for b in base)
    b_plain = med(b["restore"] + b["check"] for b in base)
    b_restore = med(b["restore"] for b in base)
    b_manifest = med(b["manifest"] for b in base)
    b_check = med(b["check"] for b in base)

    print()
    print(f"Restore test, {lab['files']:,} files / {lab['bytes'] / 1e6:.0f} MB, every file hashed, "
          f"median of {args.rounds} alternating rounds")
    print(f"  {'drcheck run_restore_test':<46}{d_total:>8.2f}s")
    print(f"  {'  restore_seconds (restic restore)':<46}{d_restore:>8.2f}s")
    print(f"  {'  verify_seconds (hash restore + live source)':<46}{d_verify:>8.2f}s")
    print(f"  {'  other (snapshots, ls, sandbox, store)':<46}{d_total - d_restore - d_verify:>8.2f}s")
    print(f"  {'baseline A: sha256sum source + restore + -c':<46}{b_full:>8.2f}s")
    print(f"  {'  sha256sum of the live source (manifest)':<46}{b_manifest:>8.2f}s")
    print(f"  {'  restic restore':<46}{b_restore:>8.2f}s")
    print(f"  {'  sha256sum -c':<46}{b_check:>8.2f}s")
    print(f"  {'baseline B: restore + -c (manifest premade)':<46}{b_plain:>8.2f}s")
    print(f"  {'(one restic call opening the repo: cat config)':<46}{med(call_cost):>8.2f}s")
    f_total = med(d["total"] for d in floor)
    a_restore = med(a["restore"] for a in alone)
    print()
    print("Where drcheck's time went (medians; spans overlap: snapshots, ls and the restore run concurrently)")
    print(f"  {'phase':<46}{'hash all':>9}{'as configured':>15}")
    for key, label in PHASES:
        print(f"  {label:<46}{med(d['phases'][key] for d in drc):>8.2f}s{med(d['phases'][key] for d in floor):>14.2f}s")
    print(f"  {'total':<46}{d_total:>8.2f}s{f_total:>14.2f}s")
    print(f"  overlap: {sorted({d['overlap'] for d in drc + floor})}")
    print()
    header = f"  {'comparison':<40}{'drcheck':>9}{'baseline':>10}{'ratio':>8}{'goal':>8}  result"
    print(header)
    print("  " + "-" * (len(header) - 2))
    rows = []
    for label, baseline in (("vs A (like for like: hashes live source)", b_full),
                            ("vs B (manifest made beforehand)", b_plain)):
        ratio = d_total / baseline
        print(f"  {label:<40}{d_total:>8.2f}s{baseline:>9.2f}s{ratio:>7.2f}x{'<=' + str(GOAL) + 'x':>8}  {verdict(ratio)}")
        rows.append({"name": f"restore test {label}", "drcheck_seconds": d_total, "baseline_seconds": baseline,
                     "ratio": ratio, "goal": f"<= {GOAL}x", "met": ratio <= GOAL})
    label = "floor: as configured vs restic restore"
    ratio = f_total / a_restore
    print(f"  {label:<40}{f_total:>8.2f}s{a_restore:>9.2f}s{ratio:>7.2f}x{'<=' + str(FLOOR_GOAL) + 'x':>8}  "
          f"{'PASS' if ratio <= FLOOR_GOAL else 'MISS'}")
    rows.append({"name": "restore test vs restic restore alone (floor)", "drcheck_seconds": f_total,
                 "baseline_seconds": a_restore, "ratio": ratio, "goal": f"<= {FLOOR_GOAL}x",
                 "met": ratio <= FLOOR_GOAL})
    emit(args.rows, rows)
    print(f"\n  benchmark wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

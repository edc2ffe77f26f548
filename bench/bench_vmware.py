"""VMware benchmark: drcheck's `inventory` probe against the project's vCenter simulator.

One simulator with `--vms` VMs (default 5,000: 2 datacenters x 5 clusters x 500 VMs) serves
both sides over verified TLS (a throwaway test CA). Measured, in one run:

1. The probe end to end (`drcheck.engine.run_probe(loaded, store, "vc")`: connect, the
   sweeps of every object type, assets and findings, recorded into a real Store) vs ONE
   raw pyvmomi `RetrievePropertiesEx` over a ContainerView of VirtualMachine, reading the
   same VM properties the probe reads (`VM_PROPS` + `triggeredAlarmState`, imported from
   the client module). Goal <= 1.5x. Best of `--repeat` alternating rounds.
2. Per-VM attribute reads (`vm.name`, `vm.config.instanceUuid`, ... one pyvmomi attribute
   access per property, as a naive script does) on `--sample` VMs, scaled up to every VM,
   vs the probe. Goal: the probe >= 30x faster.
3. The probe's peak memory: the peak RSS (`ru_maxrss` of RUSAGE_CHILDREN in a small
   wrapper) of a child process running `python -m drcheck probe vc`, beside that of a child
   running the raw sweep.
4. With a second simulator of the same size whose every call is delayed `--delay-ms`
   (default 50 ms, a WAN vCenter) and a rotation set of `--rotation-vms` VMs (default 113,
   with a snapshot each): the probe and per-VM reads again, then VM restore tests (`vm`
   kind, clone source, fenced, the simulator's default boot delay). One rotation run tests
   2 x `max_vm_tests` VMs one after the other (a rotation's VMs run in turn); then
   `max_vm_tests` rotation tests over disjoint groups of the set run at once, each in its
   own `drcheck restore-test` process, testing the same number of VMs. From the measured
   throughput: VM restore tests per `--window-hours` window (default 8) and the days a
   rotation over the whole set takes at one window a day.

Both sides must read the same VMs (the same instance UUIDs) or the benchmark exits 1. No
wall-clock assertions: a missed goal prints MISS and exits 0.

    .venv/bin/python bench/bench_vmware.py [--vms 5000] [--repeat 3] [--sample 100]
        [--delay-ms 50] [--rotation-vms 113] [--window-hours 8] [--no-restore-tests]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figure, add_common_arguments, fmt_times, time_probe, verdict  # noqa: E402
from rows import emit  # noqa: E402

RAW_GOAL = 1.5  # probe / one raw RetrievePropertiesEx, at most
NAIVE_GOAL = 30.0  # per-VM attribute reads / probe, at least
PROBE = "vc"
ROTATION = "DC0/vm/Rotation"  # the rotation set's folder; group k of the parallel run in G<k>
SANDBOX = {"folder": "DC0/vm/drcheck-sandbox", "network": "drcheck-isolated"}
TIB = 1024**4
LAYOUT = {"dc": 2, "cluster": 5, "host": 2, "standalone_host": 0}  # --vms are spread over 10 clusters


def vm_properties() -> list[str]:
    """The VM property paths the probe's sweep reads (alarms are on by default)."""
    from drcheck.clients.vsphere_inventory import ALARM_STATE, VM_PROPS

    return [*VM_PROPS, ALARM_STATE]


# -- the lab ---------------------------------------------------------------------------


def start_simulator(work: Path, tls, vms: int, delay_ms: int = 0, **kwargs):
    """A started simulator holding about `vms` generated VMs (rounded up to a multiple of
    the 10 clusters), serving TLS with `tls` (a `make_test_ca` certificate)."""
    from drcheck.lab_vcsim import Simulator

    clusters = LAYOUT["dc"] * LAYOUT["cluster"]
    sim = Simulator(work / f"vcsim-{delay_ms}ms", vm=-(-vms // clusters), delay_ms=delay_ms, tls=tls,
                    **LAYOUT, **kwargs)
    return sim.start()


def write_config(work: Path, sim, restore_tests: dict | None = None) -> Path:
    """A drcheck.toml whose probe `vc` reads `sim` with verified TLS (its CA bundle) and
    the password in a file, everything else at its defaults; plus `restore_tests` and the
    runbook of their system `district`."""
    import tomli_w

    (work / "runbooks").mkdir(exist_ok=True)
    (work / "runbooks" / "district.toml").write_text(tomli_w.dumps(
        {"name": "District servers", "tier": 1, "owner": "Network Administrator", "rto": "4h", "rpo": "24h",
         "mtd": "1d"}))
    (work / "vc-password").write_text(sim.password + "\n")
    path = work / "drcheck.toml"
    path.write_text(tomli_w.dumps({
        "agent": {"name": "bench", "state_dir": str(work / "state"), "sandbox_root": str(work / "sandbox"),
                  "runbooks_dir": str(work / "runbooks"), "timezone": "UTC"},
        "metrics": {"enabled": False},
        "probes": {PROBE: {"kind": "vmware", "url": sim.url, "username": sim.username,
                           "password": {"file": str(work / "vc-password")}, "ca_bundle": str(sim.tls.ca),
                           "call_timeout": "5m",
                           # the simulator's VMs have no backups: excluded, so `drcheck probe` (which
                           # judges every VM, R3) exits 0 and only a failed read fails the bench
                           "exclusions": [{"name": "*", "reason": "benchmark inventory, nothing to protect",
                                           "owner": "bench", "expires": "2099-12-31"}]}},
        "restore_tests": restore_tests or {},
    }))
    return path


def raw_session(sim):
    """A logged-in pyvmomi ServiceInstance, verifying TLS with the same CA as the probe."""
    from pyVim.connect import SmartConnect

    return SmartConnect(host=sim.host, port=sim.port, user=sim.username, pwd=sim.password,
                        sslContext=ssl.create_default_context(cafile=str(sim.tls.ca)))


# -- the two sides of part 1 -----------------------------------------------------------


def raw_sweep(si) -> tuple[float, list]:
    """The baseline: on an open session, CreateContainerView of VirtualMachine, ONE
    `RetrievePropertiesEx` of the probe's VM properties (pyvmomi decodes the answer), and
    DestroyView. Returns (seconds, the ObjectContents). Fails if the server paged."""
    from pyVmomi import vim, vmodl

    pc = vmodl.query.PropertyCollector
    content = si.RetrieveContent()  # a round trip of its own, before timing: the probe's is timed
    t0 = time.perf_counter()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    traverse = pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
    spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
                         propSet=[pc.PropertySpec(type=vim.VirtualMachine, all=False, pathSet=vm_properties())])
    page = content.propertyCollector.RetrievePropertiesEx(specSet=[spec], options=pc.RetrieveOptions())
    view.DestroyView()
    seconds = time.perf_counter() - t0
    if page is None or page.token is not None:
        raise RuntimeError("the raw RetrievePropertiesEx was paged: it is no longer one call")
    return seconds, list(page.objects)


def raw_uuids(objects) -> set[str]:
    return {p.val for o in objects for p in o.propSet if p.name == "config.instanceUuid"}


def probe_uuids(result) -> set[str]:
    return {a.asset_id for a in result.assets if a.kind == "vm"}


# -- part 2: per-VM attribute reads ----------------------------------------------------


def read_attributes(vm, paths: list[str]) -> dict[str, object]:
    """What a naive script does: each property as a chain of attribute reads on the
    managed object (`vm.config.instanceUuid`). pyvmomi fetches each managed-object
    attribute with its own call (`vm.config` fetches the whole config); the data-object
    attributes after it are local. A chain stops at an unset value."""
    values = {}
    for path in paths:
        value = vm
        for part in path.split("."):
            value = getattr(value, part)
            if value is None:
                break
        values[path] = value
    return values


def time_naive(objects, sample: int) -> tuple[float, list[tuple[object, dict]]]:
    """Per-VM attribute reads of every probe property on `sample` VMs spread evenly over
    the inventory. Returns (seconds, [(ObjectContent, values read)])."""
    step = max(1, len(objects) // sample)
    chosen = objects[::step][:sample]
    paths = vm_properties()
    t0 = time.perf_counter()
    read = [(o, read_attributes(o.obj, paths)) for o in chosen]
    return time.perf_counter() - t0, read


def naive_agrees(read: list[tuple[object, dict]]) -> bool:
    """The attribute reads saw what the sweep saw (name, instance UUID, power state)."""
    for content, values in read:
        swept = {p.name: p.val for p in content.propSet}
        for path in ("name", "config.instanceUuid", "runtime.powerState"):
            if swept.get(path) != values.get(path):
                return False
    return True


# -- part 3: peak memory in a child process --------------------------------------------


RAW_CHILD = """
import os, ssl, sys
sys.path.insert(0, {bench!r})
from bench_vmware import raw_sweep
from pyVim.connect import SmartConnect
si = SmartConnect(host="127.0.0.1", port={port}, user={user!r}, pwd=os.environ["VC_PASSWORD"],
                  sslContext=ssl.create_default_context(cafile={ca!r}))
seconds, objects = raw_sweep(si)
print(len(objects))
"""


# A small Python runs the measured command and reports its RUSAGE_CHILDREN peak. Measured
# straight from this process, a child's ru_maxrss would start at this process's own peak:
# Linux carries the old address space's high-water mark over an exec (and subprocess uses
# vfork, which shares ours), so a 5,000-VM benchmark process would set a floor of ~120 MB.
PEAK_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def child_peak_mb(cmd: list[str], env: dict | None = None) -> float:
    """Run `cmd` in a child of a small wrapper process; return the child's peak RSS in MB
    (`ru_maxrss` of RUSAGE_CHILDREN in the wrapper, so nothing of this process counts)."""
    proc = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return int(proc.stdout.split()[-1]) / 1024  # KiB on Linux


def peak_memory(config: Path, sim) -> tuple[float, float]:
    """(peak RSS of `python -m drcheck probe vc --json`, peak RSS of a script doing the
    raw sweep), both in MB, each in its own child process."""
    probe_mb = child_peak_mb([sys.executable, "-m", "drcheck", "-c", str(config), "probe", PROBE, "--json"])
    script = RAW_CHILD.format(bench=str(Path(__file__).resolve().parent), port=sim.port, user=sim.username,
                              ca=str(sim.tls.ca))
    raw_mb = child_peak_mb([sys.executable, "-c", script], env={**os.environ, "VC_PASSWORD": sim.password})
    return probe_mb, raw_mb


# -- part 4: VM restore tests against a WAN vCenter ------------------------------------


def configured_concurrency() -> int:
    """`max_vm_tests` as a configuration that does not set it has it (the bench's does not)."""
    from drcheck.probes.vmware import VMwareProbe

    return VMwareProbe.model_fields["max_vm_tests"].default


def rotation_scenario(vms: int, groups: int) -> dict:
    """The rotation set: `vms` small powered-on VMs, each with a 6-hour-old snapshot, in
    folders DC0/vm/Rotation/G<k> (VM i in group i % groups), spread over DC0's clusters, on
    the production network; plus the sandbox folder and an isolated port group (no uplinks)."""
    return {
        "folders": [SANDBOX["folder"], *(f"{ROTATION}/G{k}" for k in range(groups))],
        "networks": [{"datacenter": "DC0", "name": SANDBOX["network"], "uplinks": False}],
        "vms": [{"name": f"server{i:03d}", "folder": f"{ROTATION}/G{i % groups}",
                 "cluster": f"DC0_C{i % LAYOUT['cluster']}", "datastore": "LocalDS_0", "network": "VM Network",
                 "memory_mb": 128, "power": "on", "snapshots": [{"name": "nightly", "age": "6h"}]}
                for i in range(vms)],
    }


def rotation_tests(concurrency: int) -> dict:
    """`vm-rotation` over the whole set testing 2 x concurrency VMs per run, and one
    `vm-rotation-g<k>` per slot over group k testing 2 (the same count in all)."""
    def rotation(folder: str, per_run: int) -> dict:
        return {"kind": "vm", "probe": PROBE, "system": "district", "source": {"type": "clone"},
                "sandbox": SANDBOX, "rotation": {"vms": [{"folder": f"/{folder}"}], "per_run": per_run}}

    tests = {"vm-rotation": rotation(ROTATION, 2 * concurrency)}
    tests.update({f"vm-rotation-g{k}": rotation(f"{ROTATION}/G{k}", 2) for k in range(concurrency)})
    return tests


@dataclass
class TestRun:
    """The results of VM restore tests run together: each result's own start and end,
    its RTO and phases, and the wall time of the run (as seen by the benchmark)."""

    __test__ = False  # not a pytest class

    results: list[dict]
    wall: float
    calls: dict[str, int] = field(default_factory=dict)  # SOAP calls of the whole run, when counted

    @property
    def span(self) -> float:
        """First test start to last test end, from the recorded results: what the tests
        took, without a process's start-up."""
        return max(r["finished"] for r in self.results) - min(r["started"] for r in self.results)

    @property
    def per_hour(self) -> float:
        return 3600 * len(self.results) / self.span

    @property
    def durations(self) -> list[float]:
        return [r["finished"] - r["started"] for r in self.results]


def recorded(store, tests: list[str]) -> list[dict]:
    """The recorded results of `tests`: status, reason, start and end (epoch seconds), RTO
    and the phases (span name -> [start, end] seconds into the test)."""
    import json

    from drcheck.store import parse_ts

    marks = ", ".join("?" * len(tests))
    rows = store.query(f"SELECT test, status, reason, started_at, finished_at, rto_seconds, details "
                       f"FROM restore_tests WHERE test IN ({marks}) ORDER BY started_at", tests)
    return [{"test": r["test"], "status": r["status"], "reason": r["reason"],
             "started": parse_ts(r["started_at"]).timestamp(), "finished": parse_ts(r["finished_at"]).timestamp(),
             "rto": r["rto_seconds"], "phases": json.loads(r["details"] or "{}").get("phases", {})} for r in rows]


def run_in_turn(loaded, store) -> TestRun:
    """One run of `vm-rotation` in this process: its VMs are tested one after the other."""
    from drcheck.engine import run_restore_tests

    t0 = time.perf_counter()
    run_restore_tests(loaded, store, "vm-rotation")
    return TestRun(recorded(store, ["vm-rotation"]), time.perf_counter() - t0)


def run_at_once(config: Path, store, concurrency: int) -> TestRun:
    """`concurrency` rotation tests at once, each `drcheck restore-test` in its own process
    (as the agent's parallel jobs, or several operators, would start them)."""
    names = [f"vm-rotation-g{k}" for k in range(concurrency)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "drcheck", "-c", str(config), "restore-test", name],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for name in names]
    errors = [(name, proc.wait(), proc.stderr.read()) for name, proc in zip(names, procs, strict=True)]
    wall = time.perf_counter() - t0
    for proc in procs:
        proc.stderr.close()
    failed = [f"{name} exited {code}: {err.strip()[-500:]}" for name, code, err in errors if code != 0]
    if failed:
        raise RuntimeError("; ".join(failed))
    return TestRun(recorded(store, names), wall)


def phase_medians(results: list[dict]) -> dict[str, float]:
    """Median seconds of each phase over `results`, in the order the phases ran."""
    spans: dict[str, list[float]] = {}
    for r in results:
        for name, (begun, end) in sorted(r["phases"].items(), key=lambda kv: kv[1][0]):
            spans.setdefault(name, []).append(end - begun)
    return {name: statistics.median(values) for name, values in spans.items()}


def measure_restore_tests(args, work: Path, tls) -> list[Figure]:
    """Part 4 against a simulator whose every call is delayed `args.delay_ms`. Raise
    RuntimeError when the probe or any VM restore test does not pass."""
    from drcheck.config_loader import load
    from drcheck.results import Status
    from drcheck.store import Store

    concurrency = configured_concurrency()
    sim = start_simulator(work, tls, args.vms, delay_ms=args.delay_ms,
                          scenario=rotation_scenario(args.rotation_vms, concurrency))
    try:
        vms = sim.control("/health")["vms"]
        print(f"\nsimulator with {vms:,} VMs, {args.delay_ms} ms per call, ready in {sim.startup_seconds:.1f}s",
              flush=True)
        # the simulated datastores live on tmpfs: give the rotation's one a size of its own,
        # so the capacity guard judges the same figures on every machine
        sim.control("/datastore", {"datastore": "DC0/datastore/LocalDS_0", "capacity": 2 * TIB, "free": TIB})
        config = write_config(work, sim, rotation_tests(concurrency))
        loaded = load(config)
        with Store(loaded.database_path) as store:
            probe_seconds, result = time_probe(loaded, store, PROBE)  # also the rotation's inventory
            if result.status is not Status.OK:
                raise RuntimeError(f"the probe did not read the inventory: {result.reason}")
            figures = wan_inventory(args, sim, vms, probe_seconds)
            print(f"  VM restore tests (clone of each VM's newest snapshot, fenced, boot delay 1s; "
                  f"max_vm_tests = {concurrency})", flush=True)
            sim.reset_calls()
            in_turn = run_in_turn(loaded, store)
            in_turn.calls = sim.calls()
            at_once = run_at_once(config, store, concurrency)
    finally:
        sim.stop()
    bad = [r for r in in_turn.results + at_once.results if r["status"] != Status.PASSED.value]
    if bad or len(in_turn.results) != 2 * concurrency or len(at_once.results) != 2 * concurrency:
        raise RuntimeError("VM restore tests did not all pass: "
                           + "; ".join(f"{r['test']} {r['status']}: {r['reason']}" for r in bad))
    return figures + window_figures(args, concurrency, in_turn, at_once)


def wan_inventory(args, sim, vms: int, probe_seconds: float) -> list[Figure]:
    """The probe (its run just now) vs per-VM attribute reads on a few VMs, scaled up, on
    the delayed simulator: the per-VM way pays the delay once per property and VM."""
    si = raw_session(sim)
    try:
        raw_seconds, objects = raw_sweep(si)
        naive_seconds, read = time_naive(objects, args.wan_sample)
    finally:
        from pyVim.connect import Disconnect

        Disconnect(si)
    naive_scaled = naive_seconds * vms / len(read)
    speedup = naive_scaled / probe_seconds
    print(f"  drcheck probe {probe_seconds:.2f}s (one run); one raw RetrievePropertiesEx {raw_seconds:.2f}s; "
          f"per-VM attribute reads {naive_seconds:.1f}s for {len(read)} VMs, scaled to {vms:,}: "
          f"{naive_scaled / 3600:.1f} h ({speedup:.0f}x the probe)", flush=True)
    label = f"({vms} VMs, {args.delay_ms} ms per call)"
    return [Figure(f"vmware per-VM attribute reads (scaled from {len(read)}) vs inventory {label}", probe_seconds,
                   naive_scaled, speedup, f">= {NAIVE_GOAL:.0f}x", speedup >= NAIVE_GOAL)]


def window_figures(args, concurrency: int, in_turn: TestRun, at_once: TestRun) -> list[Figure]:
    """Print the VM-test figures: one test's duration and phases, the throughput one at a
    time and `concurrency` at once, what a window fits and how long the rotation takes."""
    window = args.window_hours * 3600
    single = statistics.median(in_turn.durations)
    fits_in_turn = math.floor(window * in_turn.per_hour / 3600)
    fits_at_once = math.floor(window * at_once.per_hour / 3600)
    days_in_turn = math.ceil(args.rotation_vms / fits_in_turn) if fits_in_turn else None
    days_at_once = math.ceil(args.rotation_vms / fits_at_once) if fits_at_once else None
    scaling = at_once.per_hour / (concurrency * in_turn.per_hour)
    rto = statistics.median(r["rto"] for r in in_turn.results)
    phases = ", ".join(f"{name} {sec:.2f}" for name, sec in phase_medians(in_turn.results).items())
    print(f"  one at a time (one rotation run, {len(in_turn.results)} VMs): tests took "
          f"{fmt_times(in_turn.durations)} s; RTO median {rto:.1f}s")
    print(f"    phases, median seconds: {phases}")
    calls = sum(in_turn.calls.values())
    top = sorted(in_turn.calls.items(), key=lambda kv: -kv[1])[:6]
    print(f"    SOAP calls per VM test: {calls / len(in_turn.results):.0f} x {args.delay_ms} ms = "
          f"{calls / len(in_turn.results) * args.delay_ms / 1000:.1f}s of delay (most: "
          + ", ".join(f"{k} {v / len(in_turn.results):.1f}" for k, v in top) + ")")
    print(f"  {concurrency} at once ({concurrency} rotation tests in parallel processes, {len(at_once.results)} VMs): "
          f"tests took {fmt_times(at_once.durations)} s; first start to last end {at_once.span:.1f}s "
          f"(process wall {at_once.wall:.1f}s)")
    print()
    print(f"VM restore tests, {args.delay_ms} ms per vCenter call, max_vm_tests = {concurrency}")
    print(f"  one VM restore test (median)                      {single:7.1f}s")
    print(f"  throughput one at a time                          {in_turn.per_hour:7.0f} VMs/h")
    print(f"  throughput {concurrency} at once                             {at_once.per_hour:7.0f} VMs/h  "
          f"({scaling:.2f}x of {concurrency} x one at a time)")
    print(f"  VM tests in one {args.window_hours:g}-hour window                     {fits_at_once:7,} "
          f"({fits_in_turn:,} with one rotation test, its VMs in turn)")
    print(f"  days for a {args.rotation_vms}-VM rotation, one window a day     {days_at_once:7} "
          f"({days_in_turn} with one rotation test); it needs "
          f"{60 * args.rotation_vms / at_once.per_hour:.1f} min of the window")
    label = f"({args.delay_ms} ms per call)"
    return [
        Figure(f"vmware VM restore tests, {concurrency} at once vs {concurrency} x one at a time {label}",
               at_once.span / len(at_once.results), in_turn.span / len(in_turn.results) / concurrency, scaling,
               None, None),
        Figure(f"vmware one VM restore test {label}", None, None, None, None, None, value=round(single, 2),
               unit="s"),
        Figure(f"vmware VM restore tests per {args.window_hours:g}-hour window, max_vm_tests={concurrency} {label}",
               None, None, None, None, None, value=fits_at_once, unit="VM tests"),
        Figure(f"vmware days for a {args.rotation_vms}-VM rotation, one {args.window_hours:g}-hour window a day "
               f"{label}", None, None, None, None, None, value=days_at_once, unit="days"),
    ]


# -- reporting -------------------------------------------------------------------------


def fmt_calls(calls: dict[str, int]) -> str:
    return f"{sum(calls.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(calls.items())) + ")"


# -- the run ---------------------------------------------------------------------------


@dataclass
class Rounds:
    """Part 1's alternating rounds: each side's times, the SOAP calls of its last round,
    and what each side read last."""

    probe_times: list[float] = field(default_factory=list)
    raw_times: list[float] = field(default_factory=list)
    calls: dict[str, dict] = field(default_factory=dict)
    result: object = None
    objects: list = field(default_factory=list)


def alternate(args, loaded, store, sim, si) -> Rounds:
    """`args.repeat` rounds of the probe and the raw sweep, alternating which goes first;
    the simulator's call counters are reset before each side."""
    from drcheck.results import Status

    rounds = Rounds()
    for n in range(args.repeat):
        sides = ["probe", "raw"] if n % 2 == 0 else ["raw", "probe"]
        for side in sides:
            sim.reset_calls()
            if side == "probe":
                seconds, rounds.result = time_probe(loaded, store, PROBE)
                if rounds.result.status is not Status.OK:
                    raise RuntimeError(f"probe run {n + 1}: {rounds.result.status.value} {rounds.result.reason}")
                rounds.probe_times.append(seconds)
            else:
                seconds, rounds.objects = raw_sweep(si)
                rounds.raw_times.append(seconds)
            rounds.calls[side] = sim.calls()
    return rounds


def measure_inventory(args, work: Path, sim) -> list[Figure]:
    """Parts 1 to 3 against `sim` (no per-call delay). Raise RuntimeError when a side
    could not read the inventory or the two sides did not read the same VMs."""
    from pyVim.connect import Disconnect

    from drcheck.config_loader import load
    from drcheck.results import Status
    from drcheck.store import Store

    vms = sim.control("/health")["vms"]
    config = write_config(work, sim)
    loaded = load(config)
    paths = vm_properties()
    print(f"  the probe's VM properties ({len(paths)}): {', '.join(paths)}", flush=True)
    with Store(loaded.database_path) as store:
        # Untimed first run: every asset is new to the store (the agent's steady state
        # is the timed one: assets unchanged since the last run).
        first, result = time_probe(loaded, store, PROBE)
        if result.status is not Status.OK:
            raise RuntimeError(f"the probe did not read the inventory: {result.status.value} {result.reason}")
        print(f"  first probe run (empty store, {len(result.assets):,} assets new, not timed): {first:.2f}s "
              f"- {result.reason}", flush=True)
        si = raw_session(sim)
        try:
            rounds = alternate(args, loaded, store, sim, si)
            if probe_uuids(rounds.result) != raw_uuids(rounds.objects) or len(rounds.objects) != vms:
                raise RuntimeError(f"the two sides did not read the same VMs ({len(probe_uuids(rounds.result))} "
                                   f"vs {len(rounds.objects)} of {vms})")
            sim.reset_calls()
            naive_seconds, read = time_naive(rounds.objects, args.sample)
            fetches = sim.calls().get("Fetch", 0)
            if not naive_agrees(read):
                raise RuntimeError("per-VM attribute reads disagree with the sweep")
        finally:
            Disconnect(si)
    probe_mb, raw_mb = peak_memory(config, sim)
    return inventory_figures(args, vms, rounds, naive_seconds, len(read), fetches, probe_mb, raw_mb)


def inventory_figures(args, vms: int, rounds: Rounds, naive_seconds: float, sampled: int, fetches: int,
                      probe_mb: float, raw_mb: float) -> list[Figure]:
    """Print parts 1 to 3 (per-round lines first, then the table) and return their rows."""
    probe_best, raw_best = min(rounds.probe_times), min(rounds.raw_times)
    naive_scaled = naive_seconds * vms / sampled
    ratio = probe_best / raw_best
    speedup = naive_scaled / probe_best
    print(f"  probe rounds (s): {fmt_times(rounds.probe_times)}; raw sweep rounds (s): {fmt_times(rounds.raw_times)}")
    for side in ("probe", "raw"):
        print(f"  SOAP calls of one {side} round: {fmt_calls(rounds.calls[side])}")
    print(f"  per-VM reads: {sampled} VMs in {naive_seconds:.2f}s, {fetches / sampled:.0f} calls (Fetch) per VM")
    print()
    print(f"VMware inventory, {vms:,} VMs (best of {args.repeat} alternating rounds)")
    print(f"  drcheck probe (run_probe: connect, all sweeps, store)  {probe_best:7.2f}s")
    print(f"  raw RetrievePropertiesEx, VM properties only           {raw_best:7.2f}s")
    print(f"  ratio {ratio:.2f}x   goal <= {RAW_GOAL}x   {verdict(ratio <= RAW_GOAL)}")
    print(f"  per-VM attribute reads, {sampled} VMs scaled to {vms:,}   {naive_scaled:7.1f}s")
    print(f"  probe is {speedup:.0f}x faster   goal >= {NAIVE_GOAL:.0f}x   {verdict(speedup >= NAIVE_GOAL)}")
    print(f"  peak RSS: `drcheck probe` {probe_mb:.0f} MB, raw sweep script {raw_mb:.0f} MB "
          f"({probe_mb / raw_mb:.2f}x; child processes, ru_maxrss)")
    label = f"({vms} VMs)"
    return [
        Figure(f"vmware inventory vs raw RetrievePropertiesEx {label}", probe_best, raw_best, ratio,
               f"<= {RAW_GOAL}x", ratio <= RAW_GOAL),
        Figure(f"vmware per-VM attribute reads (scaled from {sampled}) vs inventory {label}", probe_best,
               naive_scaled, speedup, f">= {NAIVE_GOAL:.0f}x", speedup >= NAIVE_GOAL),
        Figure(f"vmware inventory peak RSS vs raw sweep script {label}", None, None, probe_mb / raw_mb, None, None,
               value=round(probe_mb, 1), unit="MB"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=5000, help="VMs in the simulator (default 5000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each side; the best counts (default 3)")
    parser.add_argument("--sample", type=int, default=100, help="VMs read attribute by attribute (default 100)")
    parser.add_argument("--delay-ms", type=int, default=50, help="per-call delay of the restore-test simulator "
                                                                     "(default 50: a WAN vCenter)")
    parser.add_argument("--rotation-vms", type=int, default=113, help="VMs in the rotation set (default 113)")
    parser.add_argument("--window-hours", type=float, default=8, help="the nightly test window (default 8)")
    parser.add_argument("--wan-sample", type=int, default=10,
                        help="VMs read attribute by attribute on the delayed simulator (default 10)")
    parser.add_argument("--no-restore-tests", action="store_true", help="skip part 4 (VM restore tests)")
    add_common_arguments(parser, repeat=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from drcheck.lab_vcsim import VcsimError, make_test_ca

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="drcheck-bench-vmware-", dir=args.tmpdir) as tmp:
        work = Path(tmp).resolve()
        try:
            tls = make_test_ca(work / "ca")
            sim = start_simulator(work, tls, args.vms)
        except VcsimError as exc:
            print(f"bench: the simulator could not start: {exc}", file=sys.stderr)
            return 1
        try:
            print(f"simulator with {sim.control('/health')['vms']:,} VMs ready in {sim.startup_seconds:.1f}s "
                  f"({sim.url})", flush=True)
            (work / "inventory").mkdir()
            figures = measure_inventory(args, work / "inventory", sim)
            sim.stop()
            if not args.no_restore_tests:
                (work / "restore").mkdir()
                figures += measure_restore_tests(args, work / "restore", tls)
        except (VcsimError, RuntimeError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        finally:
            sim.stop()
    emit(args.rows, [f.row() for f in figures])
    print(f"\n  benchmark wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

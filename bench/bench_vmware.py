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
3. The probe's peak memory: the peak RSS (`ru_maxrss` from `os.wait4`) of a child process
   running `python -m drcheck probe vc`, beside that of a child running the raw sweep.

Both sides must read the same VMs (the same instance UUIDs) or the benchmark exits 1. No
wall-clock assertions: a missed goal prints MISS and exits 0.

    .venv/bin/python bench/bench_vmware.py [--vms 5000] [--repeat 3] [--sample 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402

RAW_GOAL = 1.5  # probe / one raw RetrievePropertiesEx, at most
NAIVE_GOAL = 30.0  # per-VM attribute reads / probe, at least
PROBE = "vc"
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


def write_config(work: Path, sim, **probe) -> Path:
    """A drcheck.toml whose probe `vc` reads `sim` with verified TLS (its CA bundle) and
    the password in a file; `probe` entries are merged into the probe's table."""
    import tomli_w

    (work / "runbooks").mkdir(exist_ok=True)
    (work / "vc-password").write_text(sim.password + "\n")
    path = work / "drcheck.toml"
    path.write_text(tomli_w.dumps({
        "agent": {"name": "bench", "state_dir": str(work / "state"), "sandbox_root": str(work / "sandbox"),
                  "runbooks_dir": str(work / "runbooks"), "timezone": "UTC"},
        "metrics": {"enabled": False},
        "probes": {PROBE: {"kind": "vmware", "url": sim.url, "username": sim.username,
                           "password": {"file": str(work / "vc-password")}, "ca_bundle": str(sim.tls.ca),
                           "call_timeout": "5m", **probe}},
    }))
    return path


def raw_session(sim):
    """A logged-in pyvmomi ServiceInstance, verifying TLS with the same CA as the probe."""
    from pyVim.connect import SmartConnect

    return SmartConnect(host=sim.host, port=sim.port, user=sim.username, pwd=sim.password,
                        sslContext=ssl.create_default_context(cafile=str(sim.tls.ca)))


# -- the two sides of part 1 -----------------------------------------------------------


def time_probe(loaded, store) -> tuple[float, object]:
    """drcheck's side: one `run_probe` end to end (connect and log in, every sweep, the
    assets and findings, the store transaction, log out). Returns (seconds, result)."""
    from drcheck.engine import run_probe

    t0 = time.perf_counter()
    result = run_probe(loaded, store, PROBE)
    return time.perf_counter() - t0, result


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


# -- reporting -------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    drcheck_seconds: float | None
    baseline_seconds: float | None
    ratio: float | None
    goal: str | None
    met: bool | None
    value: float | None = None
    unit: str | None = None

    def row(self) -> dict:
        """The rows.py row: the five common keys always, `value`/`unit` when set."""
        return {k: v for k, v in vars(self).items() if v is not None or k not in ("value", "unit")}


def verdict(met: bool) -> str:
    return "MET" if met else "MISS"


def fmt_calls(calls: dict[str, int]) -> str:
    return f"{sum(calls.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(calls.items())) + ")"


def fmt_times(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


# -- the run ---------------------------------------------------------------------------


def measure_inventory(args, work: Path, sim) -> list[Figure]:
    """Parts 1 to 3 against `sim` (no per-call delay)."""
    from drcheck.config_loader import load
    from drcheck.results import Status
    from drcheck.store import Store

    vms = sim.control("/health")["vms"]
    config = write_config(work, sim)
    loaded = load(config)
    paths = vm_properties()
    print(f"  the probe's VM properties ({len(paths)}): {', '.join(paths)}", flush=True)
    with Store(loaded.database_path) as store:
        si = raw_session(sim)
        try:
            # Untimed first run: every asset is new to the store (the agent's steady state
            # is the timed one: assets unchanged since the last run).
            first, result = time_probe(loaded, store)
            if result.status is not Status.OK:
                print(f"bench: the probe did not read the inventory: {result.status.value} {result.reason}",
                      file=sys.stderr)
                return []
            print(f"  first probe run (empty store, {len(result.assets):,} assets new, not timed): {first:.2f}s "
                  f"- {result.reason}", flush=True)

            probe_times, raw_times = [], []
            calls: dict[str, dict] = {}  # side -> SOAP calls of its last round
            objects: list = []
            for n in range(args.repeat):
                sides = [("probe", probe_times), ("raw", raw_times)]
                for side, times in (sides if n % 2 == 0 else sides[::-1]):
                    sim.reset_calls()
                    if side == "probe":
                        seconds, result = time_probe(loaded, store)
                        if result.status is not Status.OK:
                            print(f"bench: probe run {n + 1}: {result.status.value} {result.reason}", file=sys.stderr)
                            return []
                    else:
                        seconds, objects = raw_sweep(si)
                    times.append(seconds)
                    calls[side] = sim.calls()
            if probe_uuids(result) != raw_uuids(objects) or len(objects) != vms:
                print(f"bench: the two sides did not read the same VMs ({len(probe_uuids(result))} vs "
                      f"{len(objects)} of {vms})", file=sys.stderr)
                return []

            sim.reset_calls()
            naive_seconds, read = time_naive(objects, args.sample)
            fetches = sim.calls().get("Fetch", 0)
            if not naive_agrees(read):
                print("bench: per-VM attribute reads disagree with the sweep", file=sys.stderr)
                return []
        finally:
            from pyVim.connect import Disconnect

            Disconnect(si)

    probe_mb, raw_mb = peak_memory(config, sim)

    probe_best, raw_best = min(probe_times), min(raw_times)
    naive_scaled = naive_seconds * vms / len(read)
    ratio = probe_best / raw_best
    speedup = naive_scaled / probe_best
    print(f"  probe rounds (s): {fmt_times(probe_times)}; raw sweep rounds (s): {fmt_times(raw_times)}")
    for side in ("probe", "raw"):
        print(f"  SOAP calls of one {side} round: {fmt_calls(calls[side])}")
    print(f"  per-VM reads: {len(read)} VMs in {naive_seconds:.2f}s, {fetches / len(read):.0f} calls (Fetch) per VM")
    print()
    print(f"VMware inventory, {vms:,} VMs (best of {args.repeat} alternating rounds)")
    print(f"  drcheck probe (run_probe: connect, all sweeps, store)  {probe_best:7.2f}s")
    print(f"  raw RetrievePropertiesEx, VM properties only           {raw_best:7.2f}s")
    print(f"  ratio {ratio:.2f}x   goal <= {RAW_GOAL}x   {verdict(ratio <= RAW_GOAL)}")
    print(f"  per-VM attribute reads, {len(read)} VMs scaled to {vms:,}   {naive_scaled:7.1f}s")
    print(f"  probe is {speedup:.0f}x faster   goal >= {NAIVE_GOAL:.0f}x   {verdict(speedup >= NAIVE_GOAL)}")
    print(f"  peak RSS: `drcheck probe` {probe_mb:.0f} MB, raw sweep script {raw_mb:.0f} MB "
          f"({probe_mb / raw_mb:.2f}x; child processes, ru_maxrss)")
    label = f"({vms} VMs)"
    return [
        Figure(f"vmware inventory vs raw RetrievePropertiesEx {label}", probe_best, raw_best, ratio,
               f"<= {RAW_GOAL}x", ratio <= RAW_GOAL),
        Figure(f"vmware per-VM attribute reads (scaled from {len(read)}) vs inventory {label}", probe_best,
               naive_scaled, speedup, f">= {NAIVE_GOAL:.0f}x", speedup >= NAIVE_GOAL),
        Figure(f"vmware inventory peak RSS vs raw sweep script {label}", None, None, probe_mb / raw_mb, None, None,
               value=round(probe_mb, 1), unit="MB"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=5000, help="VMs in the simulator (default 5000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each side; the best counts (default 3)")
    parser.add_argument("--sample", type=int, default=100, help="VMs read attribute by attribute (default 100)")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--rows", default=os.environ.get("DRCHECK_BENCH_ROWS"),
                        help="append result rows (JSON lines) to this file (run_all.py sets it)")
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
        finally:
            sim.stop()
        if not figures:
            return 1
    emit(args.rows, [f.row() for f in figures])
    print(f"\n  benchmark wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

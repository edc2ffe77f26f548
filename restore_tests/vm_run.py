"""One VM restore test, from slot to cleanup: wait for a VM-test slot of the vCenter,
connect, resolve the sandbox, refuse a sandbox network with uplinks, prepare the source,
guard capacity, lease the VM's name, restore, fence, power on, verify, and always power
off and destroy the VM.

The lease (kind `vm`, resource "<probe>/<vm name>") is committed before the restore task
starts and released only once the VM is known to be gone; when vCenter cannot destroy it
now, the lease stays and the reaper (`drcheck.restore_tests.vm.cleanup`) retries after
this process ended. A source whose restore is a mount (Veeam instant recovery) names its
own lease and removes the mount instead of destroying the VM (`Plan.lease`, `Plan.dispose`).

Times: vCenter's clock is compared with ours once per test; the restore start (the
task's start, or the VM's creation event for `adopt`) is converted to our clock, so RTO =
last passing check - restore start holds across clock skew. The screenshot is evidence
taken after the last check and does not count towards RTO.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from drcheck import interrupts, locks
from drcheck.clients import SourceError
from drcheck.clients import vsphere_vm
from drcheck.durations import format_duration
from drcheck.results import RestoreTestResult, Status
from drcheck.restore_tests import vm_guards, vm_sources, vm_verify
from drcheck.timeline import Timeline

if TYPE_CHECKING:
    from drcheck.context import RunContext

log = logging.getLogger(__name__)

LEASE_KIND = "vm"
HANDLER = "drcheck.restore_tests.vm"
NAME_LIMIT = 80  # vSphere's longest VM name


def vm_name(test: str, when: datetime, suffix: str = "") -> str:
    """The sandbox VM's name, `drcheck-<test>-<UTC stamp><suffix>`: it marks the VM as
    drcheck's (the reaper destroys only such names)."""
    tail = f"-{when:%Y%m%dT%H%M%SZ}{suffix}"
    return f"{vm_sources.SANDBOX_PREFIX}{test[: NAME_LIMIT - len(vm_sources.SANDBOX_PREFIX) - len(tail)]}{tail}"


def test_vm(target, ctx: "RunContext", source: Any, label: str = "", suffix: str = "") -> RestoreTestResult:
    """Restore `source` as one sandbox VM and verify it; return the result (never raise
    for vCenter trouble, a refusal or a missing restore point: those are ERROR/FAILED)."""
    probe = ctx.loaded.config.probes[target.probe]
    runbook = ctx.loaded.runbooks.get(target.system)
    started = ctx.now()
    result = RestoreTestResult(
        test=ctx.name, kind="vm", system=target.system, status=Status.ERROR, started_at=started,
        finished_at=started, probe=target.probe, copy=target.copy or probe.copy,
        rto_target_seconds=runbook.rto.total_seconds() if runbook else None,
        rpo_target_seconds=runbook.rpo.total_seconds() if runbook else None)
    timeline = Timeline()
    result.details.update(source=source.type, phases=timeline.spans)
    run = _Run(target, ctx, probe, result, timeline, label)
    try:
        with ExitStack() as stack:
            stack.enter_context(run.slot())
            connected = timeline.start("connect")
            vc = stack.enter_context(vsphere_vm.session(probe.endpoint()))
            connected()
            run.test(vc, source, suffix)
    except vm_guards.Refused as exc:
        result.status, result.reason = Status.ERROR, str(exc)
    except SourceError as exc:
        result.status = Status.FAILED if exc.damaged else Status.ERROR
        result.reason = "; ".join(filter(None, [str(exc), result.reason]))
    if result.status is not Status.PASSED:
        log.warning("%s: %s%s", ctx.name, label, result.reason)
    result.finished_at = ctx.now()
    return result


class _Run:
    """The state of one VM test while it runs (what `test_vm` needs to clean up)."""

    def __init__(self, target, ctx: "RunContext", probe, result: RestoreTestResult, timeline: Timeline, label: str):
        self.target, self.ctx, self.probe, self.result, self.timeline = target, ctx, probe, result, timeline
        self.label = label

    def progress(self, phase: str) -> None:
        self.ctx.progress(f"{self.label}{phase}")

    @contextmanager
    def slot(self):
        """One of the vCenter's `max_vm_tests` slots; waiting shows in the progress."""
        count = self.probe.max_vm_tests

        def waiting(holders):
            pids = ", ".join(str(p) for p in holders if p)
            self.progress(f"waiting for a VM test slot on {self.target.probe} ({len(holders)} of {count} in use"
                          + (f" by pid {pids})" if pids else ")"))

        end = self.timeline.start("wait-slot")
        with locks.slot(self.ctx.loaded.config.agent.state_dir, f"vm-tests.{self.target.probe}", count, waiting):
            end()
            yield

    def test(self, vc: vsphere_vm.VCenter, source: Any, suffix: str) -> None:
        target, result, span = self.target, self.result, self.timeline.span
        skew = (vc.server_time() - self.ctx.now()).total_seconds()
        result.details["clock_skew_seconds"] = round(skew, 3)
        self.progress("checking the sandbox")
        with span("sandbox"):
            place = vm_sources.resolve(vc, target.sandbox)
        with span("source"):
            plan = vm_sources.prepare(source, vc, place, self.ctx)
        self._describe(plan)
        with span("isolation"):
            isolated = vm_guards.check_isolated(vc, place, plan)
        self.progress("checking capacity")
        with span("capacity"):
            result.checks.append(vm_guards.check_capacity(vc, plan, target.capacity))
        name = vm_name(self.ctx.name, self.ctx.now(), suffix)
        kind, resource, handler = plan.lease(name) if plan.lease else (LEASE_KIND, f"{target.probe}/{name}", HANDLER)
        made: dict[str, Any] = {"plan": plan}
        lease = None
        try:
            with interrupts.shielded():  # the lease is taken inside this `try`, whatever SIGTERM does
                lease = self.ctx.store.take_lease(kind, resource, self.ctx.name, handler)
                result.sandbox, result.details["sandbox_vm"] = resource, name
            self._restore(vc, plan, place, name, skew, isolated, made)
        except BaseException as exc:
            if lease is not None:
                with interrupts.shielded():  # a SIGTERM now waits for the VM to be gone
                    self._dispose(vc, name, lease, made, interrupted=not isinstance(exc, Exception))
            raise
        with interrupts.shielded():
            self._dispose(vc, name, lease, made, interrupted=False)

    def _describe(self, plan: vm_sources.Plan) -> None:
        result = self.result
        result.point_id, result.point_time = plan.point_id, plan.point_time
        result.copy = plan.copy or result.copy
        result.details.update(vm=plan.vm, vm_uuid=plan.vm_uuid, vm_path=plan.vm_path, restore=plan.what)
        if plan.point_time is not None:
            result.rpo_seconds = (result.started_at - plan.point_time).total_seconds()
            result.rpo_source = "restore_point"
        elif plan.rpo_note:
            result.details["rpo"] = plan.rpo_note

    def _restore(self, vc, plan: vm_sources.Plan, place, name: str, skew: float, isolated: str,
                 made: dict[str, Any]) -> None:
        target, result, span = self.target, self.result, self.timeline.span
        self.progress(f"restoring: {plan.what}")
        made["started"] = True  # from here a VM named `name` may exist
        with span("restore"):
            created = plan.create(name)
        made["vm"] = created.vm
        ready = self.ctx.now().timestamp()
        restore_start = created.started.timestamp() - skew if created.started else ready
        if created.started is None:
            result.details["restore_start"] = "unknown (no creation event): RTO counts from adoption"
        result.restore_seconds = max(ready - restore_start, 0.0)
        if not plan.vm_uuid:  # a registered VM is known only once it exists
            facts = vc.facts(created.vm)
            result.details.update(vm_uuid=facts.uuid)
        self.progress("fencing the NICs")
        with span("fence"):
            result.checks.append(vm_guards.fence(vc, created.vm, place, isolated))
        self.progress("powering on")
        with span("power-on"):
            vc.power_on(created.vm)
        self.progress(f"waiting for the guest to boot (up to {format_duration(target.boot_timeout.total_seconds())})")
        with span("boot"):
            booted = vm_verify.wait_for_boot(vc, created.vm, target.boot_timeout.total_seconds())
        result.checks.extend(booted)
        result.details["guest_ip"] = next((c.details["ip"] for c in booted if c.details.get("ip")), None)
        if target.guest_command is not None and all(c.status is Status.PASSED for c in booted):
            self.progress(f"running {target.guest_command.program} in the guest")
            with span("guest-command"):
                result.checks.append(vm_verify.guest_command(vc, created.vm, target.guest_command))
        last_check = self.ctx.now().timestamp()
        if target.screenshot and all(c.status is Status.PASSED for c in booted):
            self.progress("taking a screenshot")
            dest = self.ctx.loaded.config.agent.state_dir / "evidence" / f"{name}.png"
            with span("screenshot"):
                result.checks.append(vm_verify.screenshot(vc, created.vm, place.datacenter, dest))
        self._judge(restore_start, ready, last_check)

    def _judge(self, restore_start: float, ready: float, last_check: float) -> None:
        """The verdict (`RestoreTestResult.judge`): RTO runs from the restore's start to the
        last passing check."""
        result = self.result
        result.verify_seconds = last_check - ready
        result.judge(result.checks, last_check - restore_start)

    def _dispose(self, vc, name: str, lease: int, made: dict[str, Any], interrupted: bool) -> None:
        """Power off and destroy the sandbox VM, then release its lease. A VM vCenter
        cannot destroy now keeps its lease (the reaper retries once this process ended);
        so does a restore interrupted while its task may still be creating the VM."""
        dispose = made["plan"].dispose
        self.progress("removing the sandbox VM" if dispose else "destroying the sandbox VM")
        end = self.timeline.start("cleanup")
        try:
            if dispose is not None:  # the source removes what it made (Veeam: unmount)
                vms = [name] if made.get("started") and dispose(name) else []
            else:
                vms = [made["vm"]] if "vm" in made else vc.vms_named(name) if made.get("started") else []
                for vm in vms:
                    vc.destroy(vm)
        except SourceError as exc:
            self.result.details["left_behind"] = name
            # counted as a first cleanup attempt: the reaper retries it without recording this
            # run a second time as one that died (it ended, and says so itself)
            self.ctx.store.note_cleanup_failure(lease, str(exc))
            self.result.reason = "; ".join(filter(None, [self.result.reason, f"sandbox VM {name} was left behind "
                                                         f"(its lease is kept; the reaper removes it): {exc}"]))
            if self.result.status is Status.PASSED:  # a leak is not a pass
                self.result.status = Status.ERROR
            return
        finally:
            end()
        if made.get("started") and "vm" not in made and not vms and interrupted:
            self.result.details["left_behind"] = name  # its task may still finish: let the reaper look later
            self.ctx.store.note_cleanup_failure(lease, "interrupted while its restore task ran")
            return
        self.ctx.store.release_lease(lease, ("sandbox VM removed" if dispose else "sandbox VM destroyed") if vms
                                     else "no sandbox VM was created")


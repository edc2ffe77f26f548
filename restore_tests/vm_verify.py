"""The checks of a fenced, powered-on sandbox VM: it is on, its guest boots (heartbeat
green, tools running, an IP) within the boot timeout, an optional program run in the guest
exits as expected, and an optional console screenshot is kept as evidence.

Boot is polled with short, growing pauses (never a long fixed sleep), so a fast guest is
judged fast. Each check's duration is the time from power-on until it passed.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from pydantic import Field

from drcheck.clients.vsphere_vm import GuestLoginRefused, NotOffered, VCenter
from drcheck.config_types import Duration, SecretSpec, Strict
from drcheck.durations import format_duration
from drcheck.results import CheckResult, Status

BOOT_POLL = (0.1, 1.0)  # first and longest pause between reads of the guest's state (seconds)


class GuestCommand(Strict):
    """A program run in the guest through VMware Tools' guest operations."""

    program: str = Field(..., min_length=1, description="absolute path of the program in the guest")
    arguments: str = Field("", description="its command line arguments")
    user: str = Field(..., min_length=1, description="guest account that runs it")
    password: SecretSpec = Field(..., description="that account's password (secret reference)")
    expect_exit: int = Field(0, description="the exit code that passes")
    timeout: Duration = Field(timedelta(minutes=5), description="how long it may run")


def wait_for_boot(vc: VCenter, vm, timeout: float, poll: tuple[float, float] | None = None) -> list[CheckResult]:
    """Poll the guest until it is powered on with a green heartbeat, tools running and an
    IP address, or `timeout` seconds passed. Return one check each (power-on, heartbeat,
    tools, guest-ip): passed with the seconds it took, or failed with what was seen last."""
    poll = poll or BOOT_POLL
    begun, pause = time.perf_counter(), poll[0]
    passed: dict[str, tuple[float, str]] = {}
    tests = {
        "power-on": lambda g: g.power_state == "poweredOn",
        "heartbeat": lambda g: g.heartbeat == "green",
        "tools": lambda g: g.tools_running == "guestToolsRunning",
        "guest-ip": lambda g: bool(g.ip),
    }
    while True:
        guest = vc.guest(vm)
        elapsed = time.perf_counter() - begun
        for name, test in tests.items():
            if name not in passed and test(guest):
                passed[name] = (elapsed, (guest.ip or "") if name == "guest-ip" else "")
        if len(passed) == len(tests) or elapsed >= timeout or (guest.power_state != "poweredOn" and passed):
            break
        time.sleep(min(pause, max(timeout - elapsed, 0.01)))
        pause = min(pause * 1.5, poll[1])
    seen = (f"last seen: power {guest.power_state}, heartbeat {guest.heartbeat or 'none'}, tools "
            f"{guest.tools_running or 'unknown'}, IP {guest.ip or 'none'}")
    checks = []
    for name in tests:
        if name in passed:
            at, ip = passed[name]
            checks.append(CheckResult(name, Status.PASSED, f"after {at:.1f}s" + (f": {ip}" if ip else ""), at,
                                      {"ip": ip} if ip else {}))
        else:
            checks.append(CheckResult(name, Status.FAILED, f"not within {format_duration(elapsed)} of power-on; {seen}",
                                      elapsed))
    return checks


def guest_command(vc: VCenter, vm, command: GuestCommand) -> CheckResult:
    """Run the configured program in the guest; passed when it exits with `expect_exit`.
    A refused login or a wrong exit code fails the check; vCenter trouble raises."""
    begun = time.perf_counter()
    name = f"guest command {command.program}"
    try:
        code = vc.run_in_guest(vm, command.user, command.password.ref().reveal(), command.program,
                               command.arguments, command.timeout.total_seconds())
    except GuestLoginRefused as exc:
        return CheckResult(name, Status.FAILED, str(exc), time.perf_counter() - begun)
    took = time.perf_counter() - begun
    if code is None:
        return CheckResult(name, Status.FAILED, f"still running after {command.timeout.total_seconds():.0f}s", took)
    status = Status.PASSED if code == command.expect_exit else Status.FAILED
    return CheckResult(name, status, f"exit code {code} (expected {command.expect_exit})", took, {"exit_code": code})


def screenshot(vc: VCenter, vm, datacenter: str, dest: Path) -> CheckResult:
    """Save the console screenshot to `dest` as evidence; SKIPPED where the API offers
    none (it is evidence, never a verdict on the restore)."""
    begun = time.perf_counter()
    try:
        saved = vc.screenshot(vm, datacenter, dest)
    except NotOffered as exc:
        return CheckResult("screenshot", Status.SKIPPED, f"not taken: {exc}", time.perf_counter() - begun)
    return CheckResult("screenshot", Status.PASSED, f"saved to {saved}", time.perf_counter() - begun,
                       {"path": str(saved)})

"""The project's vCenter simulator (tests/peers/vcsim) does what its README promises.

These tests use pyvmomi's raw API and the control API only, no drcheck code: they prove the
peer, so that drcheck's own vSphere tests can trust it. Each extension the library lacks has
at least one test here.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from drcheck.lab_vcsim import Simulator, VcsimControlError, VcsimError
from tests.e2e.conftest import wait_for
from tests.e2e.vcsim_fixtures import vsphere_connect

pyVmomi = pytest.importorskip("pyVmomi")
from pyVmomi import vim, vmodl  # noqa: E402

pytestmark = pytest.mark.e2e

SCENARIO = {
    "folders": ["DC0/vm/Schools/High", "DC0/vm/Schools/Middle", "DC0/vm/drcheck-sandbox"],
    "custom_fields": ["Last Backup", "drcheck.system"],
    "networks": [
        {"datacenter": "DC0", "name": "drcheck-isolated", "uplinks": False},
        {"datacenter": "DC0", "name": "lab-uplinked", "uplinks": True},
    ],
    "vms": [
        {"name": "sis01", "folder": "DC0/vm/Schools/High", "cluster": "DC0_C0", "datastore": "LocalDS_0",
         "network": "VM Network", "guest_id": "otherGuest64", "memory_mb": 512, "cpus": 2,
         "power": "on", "annotation": "Student information system",
         "attributes": {"Last Backup": "2026-11-22", "drcheck.system": "sis"},
         "snapshots": [{"name": "nightly", "age": "36h"}], "hostname": "sis01.district.local", "guest_exit": 0},
        {"name": "sis01", "folder": "DC0/vm/Schools/Middle", "power": "off", "boot": "never"},
        {"name": "mail01", "folder": "DC0/vm/Schools/High", "network": "DC0_DVPG0", "power": "off",
         "guest_exit": 3, "boot": "200ms"},
        {"name": "stuck01", "folder": "DC0/vm/Schools/High", "power": "on", "boot": "never"},
    ],
}


# -- helpers -----------------------------------------------------------------------------


def wait_until(predicate, timeout: float = 20, interval: float = 0.05, what: str = "condition"):
    return wait_for(predicate, timeout, interval, what)


def find_vm(si, path: str) -> vim.VirtualMachine:
    vm = si.RetrieveContent().searchIndex.FindByInventoryPath(path)
    assert vm is not None, f"no VM at {path}"
    return vm


def all_of(si, kind) -> list:
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def wait_task(task) -> object:
    """WaitForTask without pyvmomi's helper: poll info.state (fewer moving parts)."""
    wait_until(lambda: task.info.state in ("success", "error"), what=f"task {task}")
    if task.info.state == "error":
        raise task.info.error
    return task.info.result


def nic(vm) -> vim.vm.device.VirtualEthernetCard:
    return next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def lab(make_vcenter):
    """A simulator with the scenario above; a short boot delay keeps tests quick."""
    return make_vcenter(scenario=SCENARIO, boot_delay="300ms")


@pytest.fixture
def si(lab):
    return vsphere_connect(lab)


# -- scenario ----------------------------------------------------------------------------


def test_scenario_builds_folders_duplicate_names_custom_fields_and_vm_settings(lab, si):
    high = find_vm(si, "DC0/vm/Schools/High/sis01")
    middle = find_vm(si, "DC0/vm/Schools/Middle/sis01")
    assert high != middle and high.name == middle.name == "sis01"
    assert find_vm(si, "DC0/vm/drcheck-sandbox") is not None  # an empty folder from "folders"

    cfm = si.RetrieveContent().customFieldsManager
    names = {f.key: f.name for f in cfm.field}
    assert {"Last Backup", "drcheck.system"} <= set(names.values())
    values = {names[v.key]: v.value for v in high.customValue}
    assert values == {"Last Backup": "2026-11-22", "drcheck.system": "sis"}
    assert middle.customValue == []

    assert high.config.annotation == "Student information system"
    assert high.config.guestId == "otherGuest64"
    assert (high.config.hardware.memoryMB, high.config.hardware.numCPU) == (512, 2)
    assert high.runtime.powerState == "poweredOn" and middle.runtime.powerState == "poweredOff"
    assert [ds.name for ds in high.datastore] == ["LocalDS_0"]
    assert high.resourcePool.owner.name == "DC0_C0"
    assert high.runtime.host.name.startswith("DC0_C0_H")
    assert nic(high).deviceInfo.label == "Network adapter 1"
    assert [n.name for n in high.network] == ["VM Network"]
    assert [n.name for n in find_vm(si, "DC0/vm/Schools/High/mail01").network] == ["DC0_DVPG0"]

    (snap,) = high.snapshot.rootSnapshotList
    assert snap.name == "nightly"
    assert abs((utcnow() - snap.createTime) - timedelta(hours=36)) < timedelta(minutes=1)
    assert middle.snapshot is None  # unset property: answered, not a dropped connection


def test_scenario_networks_with_and_without_uplinks(lab, si):
    hosts = all_of(si, vim.HostSystem)
    assert len(hosts) == 2
    for host in hosts:
        switches = {s.name: s for s in host.config.network.vswitch}
        groups = {g.spec.name: g.spec.vswitchName for g in host.config.network.portgroup}
        isolated, uplinked = switches[groups["drcheck-isolated"]], switches[groups["lab-uplinked"]]
        assert list(isolated.pnic) == [] and isolated.spec.bridge is None
        assert list(uplinked.pnic) == ["key-vim.host.PhysicalNic-vmnic1"]
        assert list(uplinked.spec.bridge.nicDevice) == ["vmnic1"]
        assert {"drcheck-isolated", "lab-uplinked"} <= {n.name for n in host.network}
    dc = si.RetrieveContent().rootFolder.childEntity[0]
    assert {"VM Network", "DC0_DVPG0", "drcheck-isolated", "lab-uplinked"} <= {n.name for n in dc.network}


def test_a_bad_scenario_fails_the_start_with_the_simulators_message(make_vcenter):
    bad = {"vms": [{"name": "x", "networks": ["no-such-network"]}]}
    with pytest.raises(VcsimError, match="no-such-network"):
        make_vcenter(scenario=bad)
    with pytest.raises(VcsimError, match="unknown field"):
        make_vcenter(scenario={"vms": [{"name": "x", "colour": "blue"}]})


# -- guest boot --------------------------------------------------------------------------


def test_guest_boots_after_the_delay_and_power_off_resets_it(lab, si):
    vm = find_vm(si, "DC0/vm/Schools/High/sis01")
    wait_until(lambda: vm.guest.toolsRunningStatus == "guestToolsRunning", what="boot")
    assert vm.guestHeartbeatStatus == "green"
    assert vm.guest.toolsStatus == "toolsOk"
    assert vm.guest.hostName == "sis01.district.local"
    ip = vm.guest.ipAddress
    assert ip.startswith("10.") and vm.guest.net[0].ipAddress == [ip]
    assert vm.summary.guest.ipAddress == ip

    wait_task(vm.PowerOffVM_Task())
    assert vm.guest.toolsRunningStatus == "guestToolsNotRunning"
    assert vm.guestHeartbeatStatus == "gray"
    assert not vm.guest.ipAddress

    began = time.monotonic()
    wait_task(vm.PowerOnVM_Task())
    assert vm.guest.toolsRunningStatus == "guestToolsNotRunning"  # booting
    wait_until(lambda: vm.guest.ipAddress == ip, what="second boot")
    assert time.monotonic() - began >= 0.25


def test_boot_never_and_a_per_vm_boot_delay(lab, si):
    stuck = find_vm(si, "DC0/vm/Schools/High/stuck01")
    mail = find_vm(si, "DC0/vm/Schools/High/mail01")
    wait_task(mail.PowerOnVM_Task())
    wait_until(lambda: mail.guest.toolsRunningStatus == "guestToolsRunning", what="mail01 boot")
    assert mail.guest.hostName == "mail01"  # no hostname set: the VM name
    time.sleep(0.5)
    assert stuck.runtime.powerState == "poweredOn"
    assert stuck.guest.toolsRunningStatus == "guestToolsNotRunning"
    assert stuck.guestHeartbeatStatus == "gray" and not stuck.guest.ipAddress

    lab.control("/vm", {"vm": "stuck01", "boot": "100ms"})
    wait_task(stuck.PowerOffVM_Task())
    wait_task(stuck.PowerOnVM_Task())
    wait_until(lambda: stuck.guestHeartbeatStatus == "green", what="stuck01 boots once allowed")


def test_a_clone_keeps_the_extra_config_so_a_never_booting_vm_stays_so(lab, si):
    source = find_vm(si, "DC0/vm/Schools/Middle/sis01")
    disk_before = [d.backing.fileName for d in source.config.hardware.device
                   if isinstance(d, vim.vm.device.VirtualDisk)]
    sandbox = si.RetrieveContent().searchIndex.FindByInventoryPath("DC0/vm/drcheck-sandbox")
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(), powerOn=False)
    clone = wait_task(source.CloneVM_Task(folder=sandbox, name="sis01-clone", spec=spec))
    options = {o.key: o.value for o in clone.config.extraConfig}
    assert options["drcheck.lab.boot"] == "never"
    # The library handed the source's disks to the clone; the simulator gives them back.
    assert [d.backing.fileName for d in source.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualDisk)] == disk_before
    wait_task(clone.PowerOnVM_Task())
    time.sleep(0.6)
    assert clone.guest.toolsRunningStatus == "guestToolsNotRunning"


# -- outage ------------------------------------------------------------------------------


def test_outage_refuse_and_hang_then_recovery_keeps_state(lab):
    si = vsphere_connect(lab, timeout=2)
    content = si.RetrieveContent()
    sandbox = content.searchIndex.FindByInventoryPath("DC0/vm/drcheck-sandbox")
    sandbox.CreateFolder("made-before-the-outage")

    lab.outage("refuse")
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        content.rootFolder.childEntity  # noqa: B018 - a property read is a SOAP call
    lab.outage("hang")
    began = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError, OSError)):
        content.rootFolder.childEntity  # noqa: B018
    assert time.monotonic() - began >= 1.5
    assert lab.control("/health")["outage"] == "hang"  # the control API stays up
    lab.outage("none")

    si = vsphere_connect(lab)
    folder = si.RetrieveContent().searchIndex.FindByInventoryPath("DC0/vm/drcheck-sandbox/made-before-the-outage")
    assert folder is not None
    with pytest.raises(VcsimControlError) as err:
        lab.outage("sideways")
    assert err.value.status == 400


def test_a_hung_request_completes_when_the_outage_ends(lab):
    import threading

    si = vsphere_connect(lab, timeout=30)
    content = si.RetrieveContent()
    lab.outage("hang")
    result: dict = {}
    reader = threading.Thread(target=lambda: result.setdefault("name", content.rootFolder.childEntity[0].name))
    reader.start()
    time.sleep(0.5)
    assert reader.is_alive()
    lab.outage("none")
    reader.join(timeout=10)
    assert result == {"name": "DC0"}


# -- control API: snapshots, VMs, datastores, hosts, alarms --------------------------------


def test_snapshot_backdating(lab, si):
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    lab.control("/snapshot", {"vm": "DC0/vm/Schools/High/sis01", "snapshot": "nightly",
                              "created": created.isoformat()})
    (snap,) = find_vm(si, "DC0/vm/Schools/High/sis01").snapshot.rootSnapshotList
    assert snap.createTime == created
    with pytest.raises(VcsimControlError) as err:
        lab.control("/snapshot", {"vm": "DC0/vm/Schools/High/sis01", "snapshot": "nope",
                                  "created": created.isoformat()})
    assert err.value.status == 404
    with pytest.raises(VcsimControlError, match="use the inventory path"):
        lab.control("/snapshot", {"vm": "sis01", "snapshot": "nightly", "created": created.isoformat()})


def test_vm_control_consolidation_and_rename_without_a_task(lab, si):
    vm = find_vm(si, "DC0/vm/Schools/High/mail01")
    assert not vm.runtime.consolidationNeeded
    lab.control("/vm", {"vm": "mail01", "consolidation_needed": True})
    assert vm.runtime.consolidationNeeded is True
    tasks_before = len(si.RetrieveContent().taskManager.recentTask)
    answer = lab.control("/vm", {"vm": "mail01", "name": "mail01-renamed"})
    assert answer["path"] == "DC0/vm/Schools/High/mail01-renamed"
    assert vm.name == "mail01-renamed" and vm.config.name == "mail01-renamed"
    assert len(si.RetrieveContent().taskManager.recentTask) == tasks_before


def test_datastore_host_and_alarm_control(lab, si):
    lab.control("/datastore", {"datastore": "LocalDS_0", "capacity": 100 * 2**30, "free": 3 * 2**30,
                               "accessible": False})
    (ds,) = all_of(si, vim.Datastore)
    assert (ds.summary.capacity, ds.summary.freeSpace, ds.summary.accessible) == (100 * 2**30, 3 * 2**30, False)

    lab.control("/host", {"host": "DC0_C0_H1", "connection_state": "notResponding", "maintenance": True,
                          "overall_status": "red", "memory_free_mb": 1024})
    host = next(h for h in all_of(si, vim.HostSystem) if h.name == "DC0_C0_H1")
    assert host.runtime.connectionState == "notResponding"
    assert host.runtime.inMaintenanceMode is True
    assert host.overallStatus == "red"
    total_mb = host.summary.hardware.memorySize // 2**20
    assert host.summary.quickStats.overallMemoryUsage == total_mb - 1024
    with pytest.raises(VcsimControlError) as err:
        lab.control("/host", {"host": "DC0_C0_H1", "connection_state": "asleep"})
    assert err.value.status == 400

    lab.control("/alarm", {"entity": "LocalDS_0", "alarm": "Datastore usage on disk", "status": "red"})
    (state,) = ds.triggeredAlarmState
    assert state.alarm.info.name == "Datastore usage on disk"
    assert state.overallStatus == "red" and state.entity == ds
    assert ds.overallStatus == "red"


def test_calls_counts_soap_methods_and_resets(lab, si):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    lab.reset_calls()
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(
            obj=view, skip=True, selectSet=[vmodl.query.PropertyCollector.TraversalSpec(
                name="v", path="view", skip=False, type=vim.view.ContainerView)])],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])])
    result = content.propertyCollector.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
    assert len(result.objects) == 4
    assert lab.calls() == {"RetrievePropertiesEx": 1}
    lab.reset_calls()
    assert lab.calls() == {}


def test_power_log_records_each_power_on_with_nic_states(lab, si):
    log = lab.power_log()
    assert {(e["vm"], e["folder"]) for e in log} == {("sis01", "DC0/vm/Schools/High"),
                                                    ("stuck01", "DC0/vm/Schools/High")}
    vm = find_vm(si, "DC0/vm/Schools/High/mail01")
    card = nic(vm)
    card.connectable.startConnected = False
    card.connectable.connected = False
    change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=card)
    wait_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))
    wait_task(vm.PowerOnVM_Task())
    entry = lab.power_log()[-1]
    assert entry["vm"] == "mail01" and entry["uuid"] == vm.config.instanceUuid
    assert entry["nics"] == [{"label": "Network adapter 1", "network": "DC0_DVPG0",
                              "connected": False, "start_connected": False}]
    sis = next(e for e in log if e["vm"] == "sis01")
    assert sis["nics"] == [{"label": "Network adapter 1", "network": "VM Network",
                            "connected": True, "start_connected": True}]
    assert datetime.fromisoformat(entry["time"].replace("Z", "+00:00")) > datetime.fromisoformat(
        sis["time"].replace("Z", "+00:00"))
    assert nic(vm).connectable.connected is False


# -- guest operations ----------------------------------------------------------------------


def guest_auth(user: str = "lab", password: str = "lab"):
    return vim.vm.guest.NamePasswordAuthentication(username=user, password=password)


def run_in_guest(si, vm, program: str = "/usr/bin/check-app", auth=None):
    """Start a program in the guest and wait for it to end; return its ProcessInfo."""
    pm = si.RetrieveContent().guestOperationsManager.processManager
    auth = auth or guest_auth()
    pid = pm.StartProgramInGuest(vm, auth, vim.vm.guest.ProcessManager.ProgramSpec(programPath=program,
                                                                                   arguments="--quick"))
    return wait_until(lambda: next((p for p in pm.ListProcessesInGuest(vm, auth, [pid]) if p.endTime), None),
                      what="the guest program to end")


def test_guest_program_exit_codes_and_credentials(lab, si):
    sis = find_vm(si, "DC0/vm/Schools/High/sis01")
    mail = find_vm(si, "DC0/vm/Schools/High/mail01")
    wait_task(mail.PowerOnVM_Task())
    for vm in (sis, mail):
        wait_until(lambda vm=vm: vm.guest.toolsRunningStatus == "guestToolsRunning", what=f"{vm.name} boot")

    done = run_in_guest(si, sis)
    assert done.exitCode == 0  # present, not unset, for a clean exit
    assert done.cmdLine == "/usr/bin/check-app --quick" and done.name == "check-app"
    assert run_in_guest(si, mail).exitCode == 3
    lab.control("/vm", {"vm": "mail01", "guest_exit": 7})
    assert run_in_guest(si, mail).exitCode == 7

    pm = si.RetrieveContent().guestOperationsManager.processManager
    spec = vim.vm.guest.ProcessManager.ProgramSpec(programPath="/bin/true")
    with pytest.raises(vim.fault.InvalidGuestLogin):
        pm.StartProgramInGuest(sis, guest_auth(password="wrong"), spec)
    with pytest.raises(vim.fault.InvalidGuestLogin):
        pm.ListProcessesInGuest(sis, guest_auth(user="root"), [])
    stuck = find_vm(si, "DC0/vm/Schools/High/stuck01")
    with pytest.raises(vim.fault.GuestOperationsUnavailable):
        pm.StartProgramInGuest(stuck, guest_auth(), spec)
    off = find_vm(si, "DC0/vm/Schools/Middle/sis01")
    with pytest.raises(vim.fault.InvalidPowerState):
        pm.StartProgramInGuest(off, guest_auth(), spec)


def test_screenshot_is_a_png_on_the_datastore(lab, si):
    vm = find_vm(si, "DC0/vm/Schools/High/sis01")
    path = wait_task(vm.CreateScreenshot_Task())
    assert path == "[LocalDS_0] sis01/sis01-1.png"
    assert wait_task(vm.CreateScreenshot_Task()) == "[LocalDS_0] sis01/sis01-2.png"
    url = f"https://127.0.0.1:{lab.port}/folder/sis01/sis01-1.png?dcPath=DC0&dsName=LocalDS_0"
    request = urllib.request.Request(url, headers={"Cookie": si._stub.cookie})
    with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=10) as response:
        data = response.read()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    off = find_vm(si, "DC0/vm/Schools/Middle/sis01")
    with pytest.raises(vim.fault.InvalidPowerState):
        wait_task(off.CreateScreenshot_Task())


# -- restore, export, register ----------------------------------------------------------------


def test_restore_creates_a_powered_off_copy_and_a_created_event(lab, si):
    before = utcnow()
    answer = lab.control("/restore", {"source": "DC0/vm/Schools/High/sis01", "name": "sis01-restored",
                                      "folder": "DC0/vm/drcheck-sandbox"})
    vm = find_vm(si, "DC0/vm/drcheck-sandbox/sis01-restored")
    assert answer["moref"] == vm._moId and answer["uuid"] == vm.config.instanceUuid
    assert vm.runtime.powerState == "poweredOff"
    card = nic(vm)
    assert (card.backing.deviceName, card.connectable.startConnected, card.connectable.connected) == (
        "VM Network", True, False)
    created = datetime.fromisoformat(answer["created"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= created <= utcnow()

    events = si.RetrieveContent().eventManager.QueryEvents(vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self")))
    (made,) = [e for e in events if isinstance(e, vim.event.VmCreatedEvent)]
    assert made.createdTime == created
    assert {o.key: o.value for o in vm.config.extraConfig}["drcheck.lab.hostname"] == "sis01.district.local"
    assert not any(e["vm"] == "sis01-restored" for e in lab.power_log())  # never powered on

    with pytest.raises(VcsimControlError) as err:
        lab.control("/restore", {"source": "nope", "name": "x"})
    assert err.value.status == 404


def test_export_then_register_vm_brings_back_guest_memory_nics_and_extra_config(lab, si):
    answer = lab.control("/export", {"vm": "DC0/vm/Schools/High/mail01", "datastore": "LocalDS_0",
                                     "dir": "exports/mail01-2026-11-22"})
    assert answer == {"path": "[LocalDS_0] exports/mail01-2026-11-22/mail01.vmx"}
    content = si.RetrieveContent()
    browser = all_of(si, vim.Datastore)[0].browser
    listing = wait_task(browser.SearchDatastore_Task("[LocalDS_0] exports/mail01-2026-11-22",
                                                 vim.host.DatastoreBrowser.SearchSpec(matchPattern=["*"])))
    assert {"mail01.vmx", "mail01.vmdk"} <= {f.path for f in listing.file}

    sandbox = content.searchIndex.FindByInventoryPath("DC0/vm/drcheck-sandbox")
    pool = content.searchIndex.FindByInventoryPath("DC0/host/DC0_C0/Resources")
    vm = wait_task(sandbox.RegisterVM_Task(path=answer["path"], asTemplate=False, pool=pool))
    source = find_vm(si, "DC0/vm/Schools/High/mail01")
    assert vm.name == "mail01" and vm != source  # the .vmx's displayName, as vCenter names it
    assert vm.config.guestId == source.config.guestId
    assert vm.config.hardware.memoryMB == source.config.hardware.memoryMB
    assert [n.name for n in vm.network] == ["DC0_DVPG0"]
    assert nic(vm).connectable.startConnected is True
    options = {o.key: o.value for o in vm.config.extraConfig}
    assert (options["drcheck.lab.guest_exit"], options["drcheck.lab.boot"]) == ("3", "200ms")
    (disk,) = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    assert disk.backing.fileName == "[LocalDS_0] exports/mail01-2026-11-22/mail01.vmdk"
    assert disk.capacityInKB == 1024 * 1024
    events = content.eventManager.QueryEvents(vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self")))
    assert any(isinstance(e, vim.event.VmRegisteredEvent) for e in events)

    with pytest.raises(vim.fault.AlreadyExists):  # those files are registered already
        wait_task(sandbox.RegisterVM_Task(path=answer["path"], asTemplate=False, pool=pool))
    second = lab.control("/export", {"vm": "DC0/vm/Schools/High/mail01", "datastore": "LocalDS_0", "dir": "exports/second"})
    named = wait_task(sandbox.RegisterVM_Task(path=second["path"], name="mail01-check", asTemplate=False, pool=pool))
    assert named.name == "mail01-check"
    wait_task(named.PowerOnVM_Task())
    assert run_in_guest(si, wait_until(lambda: named.guest.toolsRunningStatus == "guestToolsRunning" and named,
                                       what="registered VM boots")).exitCode == 3

    with pytest.raises(VcsimControlError) as err:
        lab.control("/export", {"vm": "DC0/vm/Schools/High/mail01", "datastore": "LocalDS_0", "dir": "exports/mail01-2026-11-22"})
    assert err.value.status == 409
    with pytest.raises(VcsimControlError) as err:
        lab.control("/export", {"vm": "DC0/vm/Schools/High/mail01", "datastore": "LocalDS_0", "dir": "../escape"})
    assert err.value.status == 400


# -- TLS, the launcher, scale ------------------------------------------------------------------


def test_tls_with_a_test_ca_and_the_thumbprint(make_vcenter, vcsim_ca):
    import hashlib

    from pyVim.connect import Connect, Disconnect

    sim = make_vcenter(tls=vcsim_ca)
    si = vsphere_connect(sim, cafile=vcsim_ca.ca)  # trusted through the CA bundle
    assert si.RetrieveContent().about.apiType == "VirtualCenter"
    Disconnect(si)
    with pytest.raises(ssl.SSLCertVerificationError):
        vsphere_connect(sim, verify=True)  # the system trust store does not know the test CA

    der = ssl.PEM_cert_to_DER_cert(vcsim_ca.cert.read_text())
    assert sim.thumbprint.replace(":", "") == hashlib.sha256(der).hexdigest().upper()
    # pyvmomi checks a pinned thumbprint only when normal verification fails, and
    # SmartConnect's version probe does not pin at all: use Connect with a verifying context.
    pinned = Connect(host=sim.host, port=sim.port, user=sim.username, pwd=sim.password,
                     sslContext=ssl.create_default_context(), thumbprint=sim.thumbprint,
                     version="vim.version.version11")
    assert pinned.RetrieveContent().about.apiVersion == "6.5"
    Disconnect(pinned)
    wrong = "00:" * 31 + "00"
    with pytest.raises(vim.fault.HostConnectFault, match="(?i)thumbprint"):
        Connect(host=sim.host, port=sim.port, user=sim.username, pwd=sim.password,
                sslContext=ssl.create_default_context(), thumbprint=wrong, version="vim.version.version11")


def test_wrong_vcenter_password_is_refused(make_vcenter):
    sim = make_vcenter()
    with pytest.raises(vim.fault.InvalidLogin):
        vsphere_connect(sim, password="not-the-password")


def test_restart_keeps_the_url_but_not_the_state(make_vcenter):
    sim = make_vcenter(scenario={"folders": ["DC0/vm/keep"]})
    url, control = sim.url, sim.control_url
    si = vsphere_connect(sim)
    si.RetrieveContent().searchIndex.FindByInventoryPath("DC0/vm/keep").CreateFolder("made-at-runtime")
    sim.restart()
    assert (sim.url, sim.control_url) == (url, control)
    fresh = vsphere_connect(sim).RetrieveContent().searchIndex
    assert fresh.FindByInventoryPath("DC0/vm/keep") is not None  # the scenario is applied again
    assert fresh.FindByInventoryPath("DC0/vm/keep/made-at-runtime") is None
    datastores = sim.datastore_root
    assert datastores.is_dir()
    sim.stop()
    assert not sim.running and not datastores.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sim.port), timeout=2).close()
    sim.stop()  # twice is fine


def test_the_launcher_reports_an_early_exit_with_the_simulators_stderr(vcsim_binary, tmp_path):
    sim = Simulator(tmp_path / "bad", binary_path=vcsim_binary, extra_args=("-cert", str(tmp_path / "missing.pem"),
                                                                            "-key", str(tmp_path / "missing.key")))
    with pytest.raises(VcsimError) as err:
        sim.start()
    assert "exited with status" in str(err.value) and "missing.pem" in str(err.value)
    assert not sim.running


def test_five_thousand_vms_start_quickly_and_read_in_one_sweep(make_vcenter):
    sim = make_vcenter(dc=2, cluster=5, host=2, vm=500, start_timeout=120)
    assert sim.startup_seconds < 60, f"5,000 VMs took {sim.startup_seconds:.1f} s to start"
    si = vsphere_connect(sim)
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(
            obj=view, skip=True, selectSet=[vmodl.query.PropertyCollector.TraversalSpec(
                name="v", path="view", skip=False, type=vim.view.ContainerView)])],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(
            type=vim.VirtualMachine, pathSet=["name", "config.instanceUuid", "runtime.powerState"])])
    sim.reset_calls()
    began = time.monotonic()
    result = content.propertyCollector.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
    elapsed = time.monotonic() - began
    assert len(result.objects) == 5000 and result.token is None  # 0.24 never pages
    assert len({p.val for o in result.objects for p in o.propSet if p.name == "config.instanceUuid"}) == 5000
    assert sim.calls() == {"RetrievePropertiesEx": 1}
    assert elapsed < 30
    assert sim.control("/health")["vms"] == 5000

"""The vSphere client at its boundary: pyVmomi's PropertyCollector and ViewManager are
autospec'd fakes returning real pyVmomi data objects, so paging (which the simulator does
not do), cancellation and view cleanup are checked here; the vmware probe runs with only
the client replaced."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

import pytest
import tomli_w
from pyVmomi import vim, vmodl

from drcheck.clients import vsphere, vsphere_inventory
from drcheck.clients.vsphere import Counter, Endpoint, VSphereError, api_errors, sweep
from drcheck.clients.vsphere_inventory import Inventory, read_inventory
from drcheck.config_loader import load
from drcheck.engine import run_probe
from drcheck.results import Severity, Status
from drcheck.secrets import SecretRef
from drcheck.store import Store

PC = vmodl.query.PropertyCollector
NOW = datetime.now(timezone.utc).replace(second=0, microsecond=0)
ENDPOINT = Endpoint(url="https://vc.example/sdk", username="ro", password=mock.create_autospec(SecretRef))


def content_of(obj, **props) -> PC.ObjectContent:
    """An ObjectContent as vCenter sends it (arrays typed, as pyVmomi deserialises them)."""
    def typed(value):
        return type(value[0]).Array(value) if isinstance(value, list) and value else value

    return PC.ObjectContent(obj=obj, propSet=[vmodl.DynamicProperty(name=k, val=typed(v)) for k, v in props.items()])


def page(token, *objects) -> PC.RetrieveResult:
    return PC.RetrieveResult(token=token, objects=list(objects))


class FakeVCenter:
    """A ServiceContent whose PropertyCollector answers each RetrievePropertiesEx from
    `objects` (pyVmomi type -> [ObjectContent]), split into pages of `maxObjects` with
    tokens, the way vCenter pages; every view it hands out is an autospec'd ContainerView."""

    def __init__(self, objects: dict[type, list] | None = None):
        self.objects = objects or {}
        self.collector = mock.create_autospec(PC, instance=True)
        self.collector.RetrievePropertiesEx.side_effect = self._retrieve
        self.collector.ContinueRetrievePropertiesEx.side_effect = self._continue
        self.views: list = []
        self.pending: dict[str, list] = {}
        self.specs: list = []
        manager = mock.create_autospec(vim.view.ViewManager, instance=True)
        manager.CreateContainerView.side_effect = self._view
        self.content = vim.ServiceInstanceContent(
            propertyCollector=self.collector, viewManager=manager, rootFolder=vim.Folder("group-d1"),
            customFieldsManager=vim.CustomFieldsManager("CustomFieldsManager"))
        self.instance = mock.create_autospec(vim.ServiceInstance, instance=True)
        self.instance.RetrieveContent.return_value = self.content

    def _view(self, container, type, recursive):
        view = mock.create_autospec(vim.view.ContainerView, instance=True)
        view.types, view.recursive, view.container = type, recursive, container
        self.views.append(view)
        return view

    def _retrieve(self, specSet, options):
        (spec,) = specSet
        self.specs.append(spec)
        (prop,) = spec.propSet
        found = [c for t, contents in self.objects.items() if issubclass(t, prop.type) for c in contents]
        view = spec.objectSet[0].obj
        if any(view is v for v in self.views):
            found = [c for c in found if isinstance(c.obj, tuple(view.types))]
        else:  # the objects named
            wanted = {o.obj._moId for o in spec.objectSet}
            found = [c for c in found if c.obj._moId in wanted]
        chunks = [found[i:i + options.maxObjects] for i in range(0, len(found), options.maxObjects)]
        return self._serve(chunks)

    def _serve(self, chunks):
        if not chunks:
            return None
        token = f"token-{len(self.pending) + 1}" if len(chunks) > 1 else None
        if token:
            self.pending[token] = chunks[1:]
        return page(token, *chunks[0])

    def _continue(self, token):
        return self._serve(self.pending.pop(token))


# -- paging ----------------------------------------------------------------------------


def three_pages(collector) -> list:
    vms = [vim.VirtualMachine(f"vm-{i}") for i in range(7)]
    collector.RetrievePropertiesEx.side_effect = None
    collector.RetrievePropertiesEx.return_value = page("t1", *(content_of(v, name=v._moId) for v in vms[:3]))
    collector.ContinueRetrievePropertiesEx.side_effect = [
        page("t2", *(content_of(v, name=v._moId) for v in vms[3:6])),
        page(None, content_of(vms[6], name="vm-6")),
    ]
    return vms


def test_sweep_pages_through_every_token_and_destroys_the_view():
    fake = FakeVCenter()
    three_pages(fake.collector)
    counter = Counter()

    rows = sweep(fake.content, [vim.VirtualMachine], vim.VirtualMachine, ["name", "runtime.powerState"], 3, counter)

    assert [r.moref for r in rows] == [f"vm-{i}" for i in range(7)]
    assert all(r.type == "VirtualMachine" and r.props["name"] == r.moref for r in rows)
    assert fake.collector.ContinueRetrievePropertiesEx.call_args_list == [mock.call(token="t1"), mock.call(token="t2")]
    fake.collector.CancelRetrievePropertiesEx.assert_not_called()
    (view,) = fake.views
    assert view.container is fake.content.rootFolder and view.recursive is True
    assert view.types == [vim.VirtualMachine]
    view.DestroyView.assert_called_once_with()
    spec = fake.collector.RetrievePropertiesEx.call_args.kwargs["specSet"][0]
    (prop,) = spec.propSet
    assert prop.type is vim.VirtualMachine and list(prop.pathSet) == ["name", "runtime.powerState"] and not prop.all
    assert spec.objectSet[0].obj is view and spec.objectSet[0].selectSet[0].path == "view"
    assert fake.collector.RetrievePropertiesEx.call_args.kwargs["options"].maxObjects == 3
    # create view + first page + 2 continues + destroy
    assert (counter.calls, counter.pages) == (5, 3)


def test_error_between_pages_cancels_the_rest_and_destroys_the_view():
    fake = FakeVCenter()
    three_pages(fake.collector)
    fake.collector.ContinueRetrievePropertiesEx.side_effect = [page("t2", content_of(vim.VirtualMachine("vm-x"))),
                                                               vmodl.fault.SystemError(reason="out of memory")]

    with pytest.raises(VSphereError, match=r"vc.example/sdk: sweep: SystemError"):
        with api_errors(ENDPOINT, "sweep"):
            sweep(fake.content, [vim.VirtualMachine], vim.VirtualMachine, ["name"], 3, Counter())

    fake.collector.CancelRetrievePropertiesEx.assert_called_once_with(token="t2")
    fake.views[0].DestroyView.assert_called_once_with()


def test_lost_connection_skips_cleanup_calls_that_could_only_time_out():
    fake = FakeVCenter()
    three_pages(fake.collector)
    fake.collector.ContinueRetrievePropertiesEx.side_effect = socket.timeout("timed out")

    with pytest.raises(VSphereError, match=r"vc.example/sdk: sweep: no answer within 60s") as raised:
        with api_errors(ENDPOINT, "sweep"):
            sweep(fake.content, [vim.VirtualMachine], vim.VirtualMachine, ["name"], 3, Counter())

    assert raised.value.connection_lost
    fake.collector.CancelRetrievePropertiesEx.assert_not_called()
    fake.views[0].DestroyView.assert_not_called()


def test_a_page_that_fails_to_convert_cancels_its_own_token():
    fake = FakeVCenter()
    fake.collector.RetrievePropertiesEx.side_effect = None
    expired = PC.ObjectContent(obj=vim.VirtualMachine("vm-1"), propSet=[], missingSet=[
        PC.MissingProperty(path="name", fault=vim.fault.NotAuthenticated(msg="session expired"))])
    fake.collector.RetrievePropertiesEx.return_value = page("t1", expired)

    with pytest.raises(VSphereError, match="sweep: not authenticated"):
        with api_errors(ENDPOINT, "sweep"):
            sweep(fake.content, [vim.VirtualMachine], vim.VirtualMachine, ["name"], 3, Counter())

    fake.collector.CancelRetrievePropertiesEx.assert_called_once_with(token="t1")
    fake.collector.ContinueRetrievePropertiesEx.assert_not_called()
    fake.views[0].DestroyView.assert_called_once_with()


def test_a_failing_cancel_or_destroy_never_hides_the_first_error():
    fake = FakeVCenter()
    three_pages(fake.collector)
    fake.collector.ContinueRetrievePropertiesEx.side_effect = vmodl.fault.ManagedObjectNotFound(msg="gone")
    fake.collector.CancelRetrievePropertiesEx.side_effect = ConnectionResetError("reset")
    fake.views.clear()
    fake.content.viewManager.CreateContainerView.side_effect = None
    view = mock.create_autospec(vim.view.ContainerView, instance=True)
    view.DestroyView.side_effect = ConnectionResetError("reset")
    fake.content.viewManager.CreateContainerView.return_value = view

    with pytest.raises(VSphereError, match="ManagedObjectNotFound: gone"):
        with api_errors(ENDPOINT, "sweep"):
            sweep(fake.content, [vim.VirtualMachine], vim.VirtualMachine, ["name"], 3, Counter())


def test_nothing_found_is_an_empty_list_without_continue():
    fake = FakeVCenter()
    assert sweep(fake.content, [vim.Datastore], vim.Datastore, ["name"], 10, Counter()) == []
    fake.collector.ContinueRetrievePropertiesEx.assert_not_called()
    fake.views[0].DestroyView.assert_called_once_with()


# -- the inventory read ------------------------------------------------------------------


def snapshot_tree(name: str, created: datetime, children=()) -> vim.vm.SnapshotTree:
    return vim.vm.SnapshotTree(name=name, createTime=created, snapshot=vim.vm.Snapshot(f"snapshot-{name}"),
                               id=1, state="poweredOff", quiesced=False, childSnapshotList=list(children))


def lab() -> FakeVCenter:
    """Two datacenters; DC0 with a cluster of two hosts, nested folders and two VMs named
    sis01 in different folders; DC1 with a standalone host; a triggered alarm that vCenter
    propagated to the datastore's ancestors."""
    root = vim.Folder("group-d1")
    dc0, dc1 = vim.Datacenter("datacenter-1"), vim.Datacenter("datacenter-2")
    vm0, hf0, ds0 = vim.Folder("group-v1"), vim.Folder("group-h1"), vim.Folder("group-s1")
    vm1, hf1 = vim.Folder("group-v2"), vim.Folder("group-h2")
    schools, high = vim.Folder("group-v10"), vim.Folder("group-v11")
    cluster, standalone = vim.ClusterComputeResource("domain-c1"), vim.ComputeResource("domain-s2")
    h0, h1, h2 = vim.HostSystem("host-1"), vim.HostSystem("host-2"), vim.HostSystem("host-3")
    local, shared = vim.Datastore("datastore-1"), vim.Datastore("datastore-2")
    alarm = vim.alarm.Alarm("alarm-7")
    usage = vim.alarm.AlarmState(key="alarm-7.datastore-2", entity=shared, alarm=alarm, overallStatus="red",
                                 time=NOW, acknowledged=False)
    disks = vim.vm.Summary.StorageSummary(committed=5 * 2**30, uncommitted=3 * 2**30 + 12345, unshared=0)
    vms = [
        content_of(vim.VirtualMachine("vm-1"), name="sis01", parent=high, **{
            "config.instanceUuid": "uuid-1", "config.template": False, "config.guestFullName": "Other (64-bit)",
            "config.annotation": "SIS", "runtime.powerState": vim.VirtualMachine.PowerState.poweredOn,
            "runtime.host": h0, "runtime.consolidationNeeded": True, "guest.toolsRunningStatus": "guestToolsRunning",
            "guest.hostName": "sis01.district.local", "datastore": [shared, local],
            "summary.storage.committed": disks.committed, "summary.storage.uncommitted": disks.uncommitted,
            "snapshot.rootSnapshotList": [snapshot_tree("nightly", NOW - timedelta(days=5), [
                snapshot_tree("pre-patch", NOW - timedelta(hours=2))])],
            "customValue": [vim.CustomFieldsManager.StringValue(key=101, value="2026-11-22")]}),
        content_of(vim.VirtualMachine("vm-2"), name="sis01", parent=vm0, **{
            "config.instanceUuid": "uuid-2", "runtime.host": h2, "datastore": [local]}),
        content_of(vim.VirtualMachine("vm-3"), name="golden", parent=vm1, **{
            "config.instanceUuid": "uuid-3", "config.template": True}),
    ]
    fake = FakeVCenter({
        vim.Folder: [content_of(vm0, name="vm", parent=dc0),
                     content_of(hf0, name="host", parent=dc0), content_of(ds0, name="datastore", parent=dc0),
                     content_of(vm1, name="vm", parent=dc1), content_of(hf1, name="host", parent=dc1),
                     content_of(schools, name="Schools", parent=vm0), content_of(high, name="High", parent=schools)],
        vim.Datacenter: [content_of(dc0, name="DC0", parent=root, triggeredAlarmState=[usage]),
                         content_of(dc1, name="DC1", parent=root)],
        vim.ComputeResource: [content_of(standalone, name="esx3", parent=hf1)],
        vim.ClusterComputeResource: [content_of(cluster, name="DC0_C0", parent=hf0, overallStatus="green",
                                                **{"summary.numHosts": 2, "summary.numEffectiveHosts": 1})],
        vim.HostSystem: [
            content_of(h0, name="esx1", parent=cluster, **{"runtime.connectionState": "connected"}),
            content_of(h1, name="esx2", parent=cluster, **{"runtime.connectionState": "notResponding",
                                                           "runtime.inMaintenanceMode": True}),
            content_of(h2, name="esx3", parent=standalone, **{"runtime.connectionState": "connected"})],
        vim.Datastore: [
            content_of(local, name="LocalDS_0", parent=ds0, **{"summary.capacity": 100 * 2**30,
                                                               "summary.freeSpace": 4 * 2**30,
                                                               "summary.accessible": True}),
            content_of(shared, name="shared", parent=ds0, triggeredAlarmState=[usage],
                       **{"summary.accessible": False})],
        vim.VirtualMachine: vms,
        vim.CustomFieldsManager: [content_of(vim.CustomFieldsManager("CustomFieldsManager"), field=[
            vim.CustomFieldsManager.FieldDef(key=101, name="Last Backup")])],
        vim.alarm.Alarm: [content_of(alarm, **{"info.name": "Datastore usage on disk"})],
    })
    return fake


def test_inventory_is_read_in_one_sweep_per_type_and_paged():
    fake = lab()

    found = read_inventory(fake.instance, ENDPOINT, page_size=2)

    sis = {vm.path: vm for vm in found.vms if vm.name == "sis01"}
    assert set(sis) == {"/DC0/vm/Schools/High/sis01", "/DC0/vm/sis01"}  # duplicate names, both kept
    vm = sis["/DC0/vm/Schools/High/sis01"]
    assert (vm.uuid, vm.folder, vm.datacenter, vm.cluster, vm.host) == \
        ("uuid-1", "/DC0/vm/Schools/High", "DC0", "DC0_C0", "esx1")
    assert (vm.power_state, vm.datastores, vm.custom_attributes) == ("poweredOn", ["LocalDS_0", "shared"],
                                                                     {"Last Backup": "2026-11-22"})
    assert type(vm.power_state) is str  # no pyVmomi enum leaves the client
    assert [(s.name, s.created) for s in vm.snapshots] == [("nightly", NOW - timedelta(days=5)),
                                                          ("pre-patch", NOW - timedelta(hours=2))]
    assert vm.provisioned_bytes == 8 * 2**30 + 12345 and vm.consolidation_needed
    other = sis["/DC0/vm/sis01"]
    assert (other.cluster, other.host, other.snapshots, other.template) == (None, "esx3", [], False)
    assert [v.template for v in found.vms if v.name == "golden"] == [True]
    hosts = {h.name: h for h in found.hosts}
    assert hosts["esx2"].path == "/DC0/host/DC0_C0/esx2" and hosts["esx3"].path == "/DC1/host/esx3/esx3"
    assert (hosts["esx2"].connection_state, hosts["esx2"].maintenance) == ("notResponding", True)
    assert [(c.name, c.hosts, c.effective_hosts) for c in found.clusters] == [("DC0_C0", 2, 1)]
    assert {d.name: d.accessible for d in found.datastores} == {"LocalDS_0": True, "shared": False}
    (alarm,) = found.alarms  # the same state reported on the datastore and its datacenter: once
    assert (alarm.alarm, alarm.status, alarm.entity) == ("Datastore usage on disk", "red", "/DC0/datastore/shared")
    # five view sweeps, the custom field names and the alarm names: one RetrievePropertiesEx each
    assert fake.collector.RetrievePropertiesEx.call_count == 7
    assert len(fake.views) == 5 and all(v.DestroyView.call_count == 1 for v in fake.views)
    assert fake.collector.ContinueRetrievePropertiesEx.call_count == 6  # pages of 2: 9 folders+DCs, 3 hosts, 3 VMs
    assert found.pages == 7 + 6 and found.calls == 1 + 5 * 2 + 7 + 6
    vm_spec = next(s for s in fake.specs if s.propSet[0].type is vim.VirtualMachine)
    assert list(vm_spec.propSet[0].pathSet) == [*vsphere_inventory.VM_PROPS, "triggeredAlarmState"]


def test_without_alarms_no_alarm_state_is_read():
    fake = lab()
    found = read_inventory(fake.instance, ENDPOINT, alarms=False)
    assert found.alarms == [] and fake.collector.RetrievePropertiesEx.call_count == 6
    assert all("triggeredAlarmState" not in s.propSet[0].pathSet for s in fake.specs)


# -- the probe, with the client replaced ---------------------------------------------------


@pytest.fixture
def probe_config(tmp_path: Path) -> Path:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "pw").write_text("secret")
    path = tmp_path / "drcheck.toml"
    path.write_text(tomli_w.dumps({
        "agent": {"state_dir": "state", "sandbox_root": "sandbox"},
        "probes": {"vc": {"kind": "vmware", "url": "https://vc.example/sdk", "username": "ro",
                          "password": {"file": "pw"}, "insecure": True, "page_size": 2,
                          "inventory": {"last_backup_attribute": "Last Backup", "snapshot_max_count": 1}}},
    }))
    return path


def run_with(monkeypatch, config: Path, fake: FakeVCenter | None = None, error: Exception | None = None):
    class Session:
        def __init__(self, endpoint, who=""):
            self.endpoint, self.who = endpoint, who

        def __enter__(self):
            if error:
                raise error
            vsphere.log.warning("%s: vCenter %s: TLS certificate verification is OFF", self.who, self.endpoint.url)
            return fake.instance

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(vsphere, "connect", Session)
    loaded = load(config)
    with Store(loaded.database_path) as store:
        result = run_probe(loaded, store, "vc")
        assets = store.current_assets()
    return result, assets


def test_probe_reports_assets_and_findings_and_stays_ok(monkeypatch, probe_config, caplog):
    result, stored = run_with(monkeypatch, probe_config, lab())

    assert result.status is Status.OK, result.reason
    assert result.reason.startswith("2 VMs, 1 template, 3 hosts, 2 datastores, 1 cluster read in")
    by_id = {a.asset_id: a for a in result.assets}
    vm = by_id["uuid-1"]
    assert (vm.kind, vm.name, vm.protected, vm.system) == ("vm", "sis01", False, None)
    assert vm.attributes == {
        "moref": "vm-1", "path": "/DC0/vm/Schools/High/sis01", "folder": "/DC0/vm/Schools/High",
        "datacenter": "DC0", "cluster": "DC0_C0", "host": "esx1", "power_state": "poweredOn",
        "tools_running": "guestToolsRunning", "guest_os": "Other (64-bit)", "guest_hostname": "sis01.district.local",
        "datastores": ["LocalDS_0", "shared"], "committed_gb": 5.0, "provisioned_gb": 8.0,
        "snapshots": [{"name": "nightly", "created": (NOW - timedelta(days=5)).isoformat()},
                      {"name": "pre-patch", "created": (NOW - timedelta(hours=2)).isoformat()}],
        "consolidation_needed": True, "annotation": "SIS", "custom_attributes": {"Last Backup": "2026-11-22"},
        "last_backup_note": "2026-11-22", "template": False}
    assert by_id["uuid-3"].attributes["template"] is True
    assert {a.asset_id for a in result.assets if a.kind != "vm"} == {
        "host:host-1", "host:host-2", "host:host-3", "datastore:datastore-1", "datastore:datastore-2",
        "cluster:domain-c1"}
    assert by_id["datastore:datastore-1"].attributes["free_percent"] == 4
    findings = {(f.code, f.severity): f.message for f in result.findings}
    assert findings == {
        ("alarm", Severity.CRITICAL): "alarm 'Datastore usage on disk' is red on /DC0/datastore/shared",
        ("consolidation_needed", Severity.WARNING): "VM /DC0/vm/Schools/High/sis01 needs its disks consolidated",
        ("datastore_inaccessible", Severity.CRITICAL): "datastore /DC0/datastore/shared is not accessible",
        ("datastore_low", Severity.CRITICAL):
            "datastore /DC0/datastore/LocalDS_0 has 4% free (4 of 100 GiB; limit 10%)",
        ("host_disconnected", Severity.CRITICAL): "host /DC0/host/DC0_C0/esx2 is notResponding",
        ("host_maintenance", Severity.WARNING): "host /DC0/host/DC0_C0/esx2 is in maintenance mode",
        ("snapshot_count", Severity.WARNING): "VM /DC0/vm/Schools/High/sis01 has 2 snapshots (limit 1)",
        ("snapshot_old", Severity.WARNING):
            f"VM /DC0/vm/Schools/High/sis01: snapshot 'nightly' taken {NOW - timedelta(days=5):%Y-%m-%d %H:%M} UTC "
            "is older than 3d",
    }
    assert all(f.system is None for f in result.findings)
    assert {"vms": 2, "templates": 1, "hosts": 3, "datastores": 2, "clusters": 1, "triggered_alarms": 1}.items() \
        <= result.details.items()
    assert result.details["pages"] == 13 and result.details["api_calls"] == 24
    assert len(stored) == len(result.assets)
    assert "probe vc: vCenter https://vc.example/sdk: TLS certificate verification is OFF" in caplog.text


@pytest.mark.parametrize("error", [
    VSphereError("vCenter https://vc.example/sdk: login refused for user 'ro' (wrong user name or password)"),
    VSphereError("vCenter https://vc.example/sdk: unreachable (connection refused)"),
])
def test_unreadable_vcenter_is_a_one_line_error_keeping_the_assets(monkeypatch, probe_config, error):
    run_with(monkeypatch, probe_config, lab())
    result, stored = run_with(monkeypatch, probe_config, error=error)
    assert result.status is Status.ERROR and result.reason == str(error) and "\n" not in result.reason
    assert result.assets == [] and len(stored) == 9  # what the last readable sweep found stands


def test_warning_datastore_and_fresh_snapshots_make_no_critical(monkeypatch, probe_config):
    fake = FakeVCenter({vim.Datastore: [content_of(vim.Datastore("datastore-1"), name="ds", **{
        "summary.capacity": 100 * 2**30, "summary.freeSpace": 7 * 2**30, "summary.accessible": True})]})
    result, _ = run_with(monkeypatch, probe_config, fake)
    assert [(f.code, f.severity) for f in result.findings] == [("datastore_low", Severity.WARNING)]
    assert isinstance(result.details["sweep_seconds"], float) and Inventory().vms == []

"""The VM operations client below the property collector, with real pyVmomi data objects
(no network): paging through RetrievePropertiesEx, NIC backings read and rewritten,
physical uplinks of standard and distributed switches, task failures, pinned
certificates. The simulator does not page and has no distributed-switch pnics."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
from pyVmomi import vim

from drcheck.clients import vsphere_vm
from drcheck.clients.vsphere import Endpoint, VSphereError
from drcheck.clients.vsphere_vm import Network, VCenter
from drcheck.clients.vsphere_vm_guest import _check_pin
from drcheck.secrets import SecretRef

ENDPOINT = Endpoint(url="https://127.0.0.1:8989/sdk", username="u", password=SecretRef(env="X"))
CARD = vim.vm.device.VirtualEthernetCard


def vcenter(collector) -> VCenter:
    content = SimpleNamespace(propertyCollector=collector)
    return VCenter(SimpleNamespace(RetrieveContent=lambda: content), ENDPOINT)


def page(objects: dict, token=None):
    """A RetrieveResult's shape (pyVmomi's own type refuses untyped lists as values)."""
    return SimpleNamespace(token=token, objects=[
        SimpleNamespace(obj=obj, propSet=[SimpleNamespace(name=k, val=v) for k, v in props.items()])
        for obj, props in objects.items()])


class Props:
    """A property collector answering from {moId: {path: value}} (one page)."""

    def __init__(self, table: dict):
        self.table, self.calls = table, 0

    def RetrievePropertiesEx(self, specs, options):
        self.calls += 1
        paths = [p for spec in specs for ps in spec.propSet for p in ps.pathSet]
        objs = [o.obj for spec in specs for o in spec.objectSet]
        return page({o: {p: v for p, v in self.table.get(o._moId, {}).items() if p in paths} for o in objs})


def test_props_of_follows_the_paging_token_and_keeps_the_order():
    a, b, c = vim.VirtualMachine("vm-1"), vim.VirtualMachine("vm-2"), vim.Datastore("ds-1")
    collector = MagicMock()
    collector.RetrievePropertiesEx.return_value = page({b: {"name": "two"}}, token="more")
    collector.ContinueRetrievePropertiesEx.return_value = page({a: {"name": "one"}, c: {"name": "ds"}})
    assert vcenter(collector).props_of([a, b, c], "name") == [{"name": "one"}, {"name": "two"}, {"name": "ds"}]
    collector.ContinueRetrievePropertiesEx.assert_called_once_with("more")
    (spec,), _ = collector.RetrievePropertiesEx.call_args[0]
    assert sorted(ps.type.__name__ for ps in spec.propSet) == ["vim.Datastore", "vim.VirtualMachine"]


def nic(key, backing, connected=True, start=True):
    return vim.vm.device.VirtualVmxnet3(
        key=key, deviceInfo=vim.Description(label=f"Network adapter {key - 3999}", summary=""), backing=backing,
        connectable=vim.vm.device.VirtualDevice.ConnectInfo(connected=connected, startConnected=start,
                                                            allowGuestControl=True))


def devices():
    return [
        vim.vm.device.VirtualDisk(key=2000),
        nic(4000, CARD.NetworkBackingInfo(network=vim.Network("network-7"), deviceName="VM Network")),
        nic(4001, CARD.DistributedVirtualPortBackingInfo(port=vim.dvs.PortConnection(
            switchUuid="50 1a", portgroupKey="dvportgroup-9")), connected=False, start=False),
        nic(4002, CARD.OpaqueNetworkBackingInfo(opaqueNetworkId="nsx-1", opaqueNetworkType="nsx.LogicalSwitch")),
    ]


def test_nics_are_read_with_their_network_and_connection_state():
    vm = vim.VirtualMachine("vm-1")
    nics = vcenter(Props({"vm-1": {"config.hardware.device": devices()}})).nics(vm)
    assert [(n.label, n.network_key, n.connected, n.start_connected) for n in nics] == [
        ("Network adapter 1", "network-7", True, True),
        ("Network adapter 2", "dvportgroup-9", False, False),
        ("Network adapter 3", "opaque:nsx-1", True, True),
    ]


@pytest.mark.parametrize("network, backing", [
    (Network("iso", "network-12", "standard", vim.Network("network-12")), CARD.NetworkBackingInfo),
    (Network("iso", "dvportgroup-3", "distributed", vim.dvs.DistributedVirtualPortgroup("dvportgroup-3"), "50 1a"),
     CARD.DistributedVirtualPortBackingInfo),
])
def test_move_nics_rewrites_only_the_named_nics_in_one_reconfigure(monkeypatch, network, backing):
    vm = MagicMock()
    vm.__class__ = vim.VirtualMachine
    vc = vcenter(Props({}))
    monkeypatch.setattr(vc, "_ethernet", lambda v: [d for d in devices() if isinstance(d, CARD)])
    monkeypatch.setattr(vc, "wait", lambda task, what, timeout=None: None)
    vc.move_nics(vm, [4000, 4002], network)
    spec = vm.ReconfigVM_Task.call_args.kwargs["spec"]
    assert [(c.operation, c.device.key) for c in spec.deviceChange] == [("edit", 4000), ("edit", 4002)]
    assert all(isinstance(c.device.backing, backing) for c in spec.deviceChange)
    if network.kind == "distributed":
        assert spec.deviceChange[0].device.backing.port.portgroupKey == "dvportgroup-3"


def standard_host(name, switch):
    return {"name": name,
            "config.network.portgroup": [vim.host.PortGroup(spec=vim.host.PortGroup.Specification(
                name="iso", vswitchName="vSwitch1", vlanId=0, policy=vim.host.NetworkPolicy()))],
            "config.network.vswitch": [switch]}


def test_uplinks_of_a_standard_port_group_on_every_host():
    bare = vim.host.VirtualSwitch(name="vSwitch1", pnic=[], spec=vim.host.VirtualSwitch.Specification(numPorts=8))
    linked = vim.host.VirtualSwitch(name="vSwitch1", pnic=["key-vim.host.PhysicalNic-vmnic1"],
                                    spec=vim.host.VirtualSwitch.Specification(numPorts=8))
    network = Network("iso", "network-12", "standard", vim.Network("network-12"))
    table = {"network-12": {"host": [vim.HostSystem("host-1"), vim.HostSystem("host-2")]},
             "host-1": standard_host("H1", bare), "host-2": standard_host("H2", linked)}
    assert vcenter(Props(table)).uplinks(network) == ["vSwitch vSwitch1 on H2 has physical uplinks (vmnic1)"]
    table["host-2"] = standard_host("H2", bare)
    assert vcenter(Props(table)).uplinks(network) == []
    # a host that may run the VM but that vCenter does not list for the network is looked at too
    table["host-3"] = {"name": "H3", "config.network.portgroup": [], "config.network.vswitch": []}
    assert vcenter(Props(table)).uplinks(network, (vim.HostSystem("host-3"),)) == ["host H3 has no port group iso"]
    table["network-12"]["host"] = []
    assert "cannot be verified" in vcenter(Props(table)).uplinks(network)[0]


def test_uplinks_of_a_distributed_switch_with_pnics():
    member = vim.dvs.HostMember(config=vim.dvs.HostMember.ConfigInfo(
        host=vim.HostSystem("host-1"),
        backing=vim.dvs.HostMember.PnicBacking(pnicSpec=[vim.dvs.HostMember.PnicSpec(pnicDevice="vmnic2")])))
    dvs = vim.DistributedVirtualSwitch("dvs-1")
    network = Network("iso", "dvportgroup-3", "distributed", vim.dvs.DistributedVirtualPortgroup("dvportgroup-3"))
    table = {"dvportgroup-3": {"config.distributedVirtualSwitch": dvs},
             "dvs-1": {"name": "DSwitch", "config": vim.DistributedVirtualSwitch.ConfigInfo(host=[member])},
             "host-1": {"name": "H1"}}
    assert vcenter(Props(table)).uplinks(network) == ["distributed switch DSwitch on H1 has physical NICs vmnic2"]


def test_an_opaque_network_cannot_be_proven_isolated():
    network = Network("nsx", "opaque:1", "opaque", vim.OpaqueNetwork("network-o"))
    assert "opaque (NSX)" in vcenter(Props({})).uplinks(network)[0]


def test_a_failed_task_raises_with_the_fault():
    task = vim.Task("task-1")
    info = vim.TaskInfo(state="error", error=vim.fault.InsufficientResourcesFault(msg="not enough memory"))
    with pytest.raises(VSphereError, match="clone sis01: InsufficientResourcesFault: not enough memory"):
        vcenter(Props({"task-1": {"info": info}})).wait(task, "clone sis01")


def test_a_missing_vm_is_a_missing_restore_point():
    collector = Props({})
    vc = vcenter(collector)
    vc.content.searchIndex = SimpleNamespace(FindByInventoryPath=lambda path: None)
    with pytest.raises(vsphere_vm.Missing) as caught:
        vc.vm("DC0/vm/Replicas/gone")
    assert caught.value.damaged


def test_a_pinned_certificate_is_compared_by_its_digest():
    der = b"certificate bytes"
    _check_pin(der, ":".join(hashlib.sha256(der).hexdigest()[i:i + 2] for i in range(0, 64, 2)))
    _check_pin(der, hashlib.sha1(der).hexdigest())
    with pytest.raises(VSphereError, match="does not match the pinned thumbprint"):
        _check_pin(der, hashlib.sha256(b"other").hexdigest())

"""What the `vm` restore test reads about its sandbox before creating anything: datastores,
networks and their switches' physical uplinks, compute (pool and hosts) and host memory.
A mixin of `drcheck.clients.vsphere_vm.VCenter` (uses its `props`, `props_of`, `find`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drcheck.clients.vsphere import VSphereError


@dataclass(frozen=True)
class Network:
    """A port group. `key` is what a NIC backing names: the network's moref for a
    standard port group, the portgroup key for a distributed one."""

    name: str
    key: str
    kind: str  # "standard", "distributed" or "opaque"
    handle: Any = field(compare=False, repr=False)
    switch_uuid: str | None = None


@dataclass(frozen=True)
class Compute:
    """Where a VM runs: a resource pool and the hosts that may run it."""

    pool: Any = field(repr=False)
    hosts: tuple = field(repr=False)


@dataclass(frozen=True)
class HostMemory:
    name: str
    free_mb: int
    usable: bool  # connected and not in maintenance mode


@dataclass(frozen=True)
class DatastoreSpace:
    name: str
    capacity: int
    free: int
    accessible: bool


class SandboxReads:
    """Reads of datastores, networks, compute and host memory (mixed into VCenter)."""

    def datastore(self, datacenter: str, name: str) -> Any:
        return self._named(f"{datacenter}/datastore", "datastore", name)

    def networks(self, datacenter: str) -> list[Network]:
        """Every network (port group) of `datacenter`, once each (three calls whatever
        their number: names, distributed port groups' switches, those switches' UUIDs)."""
        from pyVmomi import vim

        dc = self._entity(datacenter, "datacenter")
        handles = list({h._moId: h for h in self.props(dc, "network").get("network") or []}.values())
        names = [p.get("name", "?") for p in self.props_of(handles, "name")]
        portgroups = [h for h in handles if isinstance(h, vim.dvs.DistributedVirtualPortgroup)]
        switches = {h._moId: p.get("config.distributedVirtualSwitch")
                    for h, p in zip(portgroups, self.props_of(portgroups, "config.distributedVirtualSwitch"), strict=True)}
        distinct = list({s._moId: s for s in switches.values() if s is not None}.values())
        uuids = {s._moId: p.get("uuid") for s, p in zip(distinct, self.props_of(distinct, "uuid"), strict=True)}
        found = []
        for handle, name in zip(handles, names, strict=True):
            if handle._moId in switches:
                switch = switches[handle._moId]
                found.append(Network(name, handle._moId, "distributed", handle, uuids.get(switch._moId) if switch else None))
            else:
                kind = "opaque" if isinstance(handle, vim.OpaqueNetwork) else "standard"
                found.append(Network(name, handle._moId, kind, handle))
        return found

    def compute(self, path: str) -> Compute:
        """The pool and hosts of a resource pool, cluster or host at inventory path `path`."""
        from pyVmomi import vim

        entity = self._entity(path, "resource pool, cluster or host")
        if isinstance(entity, vim.HostSystem):
            owner = self.props(entity, "parent")["parent"]
            return Compute(self.props(owner, "resourcePool")["resourcePool"], (entity,))
        if isinstance(entity, vim.ComputeResource):
            p = self.props(entity, "resourcePool", "host")
            return Compute(p["resourcePool"], tuple(p.get("host") or ()))
        if isinstance(entity, vim.ResourcePool):
            return self.pool_compute(entity)
        raise VSphereError(f"{path} is a {type(entity).__name__}, not a resource pool, cluster or host")

    def pool_compute(self, pool: Any) -> Compute:
        owner = self.props(pool, "owner")["owner"]
        return Compute(pool, tuple(self.props(owner, "host").get("host") or ()))

    def first_compute(self, datacenter: str) -> Compute:
        """The first cluster or standalone host of `datacenter` (for a sandbox naming none)."""
        from pyVmomi import vim

        folder = self._entity(f"{datacenter}/host", "host folder")
        for child in self.props(folder, "childEntity").get("childEntity") or []:
            if isinstance(child, vim.ComputeResource):
                p = self.props(child, "resourcePool", "host")
                return Compute(p["resourcePool"], tuple(p.get("host") or ()))
        raise VSphereError(f"datacenter {datacenter} has no cluster or host to run a sandbox VM")

    def uplinks(self, network: Network, hosts: tuple = ()) -> list[str]:
        """The physical uplinks `network`'s switch has, one description each (empty:
        none). A standard port group is looked at on every host vCenter lists for it and
        on `hosts` (those that may run the VM): a host without it is a problem too, since
        nothing can be verified there."""
        if network.kind == "opaque":
            return [f"{network.name} is an opaque (NSX) network; drcheck cannot see its uplinks"]
        if network.kind == "distributed":
            return self._dvs_uplinks(network)
        listed = list(self.props(network.handle, "host").get("host") or [])
        every = list({h._moId: h for h in [*listed, *hosts]}.values())
        if not every:
            return [f"no host has port group {network.name}: its uplinks cannot be verified"]
        found = []
        for p in self.props_of(every, "name", "config.network.portgroup", "config.network.vswitch"):
            switches = {v.name: v for v in p.get("config.network.vswitch") or []}
            groups = [g for g in p.get("config.network.portgroup") or [] if g.spec.name == network.name]
            if not groups:
                found.append(f"host {p.get('name', '?')} has no port group {network.name}")
            for group in groups:
                switch = switches.get(group.spec.vswitchName)
                pnics = list(getattr(switch, "pnic", None) or [])
                bridge = getattr(getattr(switch, "spec", None), "bridge", None)
                if pnics or bridge is not None:
                    what = ", ".join(n.rpartition("-")[2] for n in pnics) or type(bridge).__name__
                    found.append(f"vSwitch {group.spec.vswitchName} on {p.get('name', '?')} has physical uplinks "
                                 f"({what})")
        return found

    def _dvs_uplinks(self, network: Network) -> list[str]:
        dvs = self.props(network.handle, "config.distributedVirtualSwitch")["config.distributedVirtualSwitch"]
        config = self.props(dvs, "config", "name")
        found = []
        for member in getattr(config.get("config"), "host", None) or []:
            pnics = [s.pnicDevice for s in getattr(member.config.backing, "pnicSpec", None) or []]
            if pnics:
                host = self.props(member.config.host, "name").get("name", "?") if member.config.host else "?"
                found.append(f"distributed switch {config.get('name')} on {host} has physical NICs {', '.join(pnics)}")
        return found

    def host_memory(self, compute: Compute) -> list[HostMemory]:
        paths = ("name", "summary.hardware.memorySize", "summary.quickStats.overallMemoryUsage",
                 "runtime.connectionState", "runtime.inMaintenanceMode")
        found = []
        for p in self.props_of(list(compute.hosts), *paths):
            total = int(p.get("summary.hardware.memorySize") or 0) // (1024 * 1024)
            used = int(p.get("summary.quickStats.overallMemoryUsage") or 0)
            usable = p.get("runtime.connectionState") == "connected" and not p.get("runtime.inMaintenanceMode")
            found.append(HostMemory(p.get("name", "?"), total - used, usable))
        return found

    def datastore_space(self, datastore: Any) -> DatastoreSpace:
        summary = self.props(datastore, "summary")["summary"]
        return DatastoreSpace(summary.name, int(summary.capacity or 0), int(summary.freeSpace or 0),
                              bool(summary.accessible))

    def _entity(self, path: str, what: str) -> Any:
        entity = self.find(path)
        if entity is None:
            raise VSphereError(f"vCenter {self.endpoint.url}: no {what} {path}")
        return entity

    def _named(self, folder_path: str, what: str, name: str) -> Any:
        folder = self._entity(folder_path, f"{what} folder")
        children = list(self.props(folder, "childEntity").get("childEntity") or [])
        for child, p in zip(children, self.props_of(children, "name"), strict=True):
            if p.get("name") == name:
                return child
        raise VSphereError(f"vCenter {self.endpoint.url}: no {what} {name} in {folder_path.partition('/')[0]}")

package main

// Scenario networks: a standard port group on a new standard vSwitch on every
// host of a datacenter, with or without a physical uplink. drcheck refuses to
// treat a network with uplinks as "isolated", so both kinds are needed.

import (
	"fmt"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func datacenterHosts(dc *simulator.Datacenter) []*simulator.HostSystem {
	var hosts []*simulator.HostSystem
	for _, e := range simulator.Map.All("HostSystem") {
		if h := e.(*simulator.HostSystem); datacenterOf(h) == dc {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

func (l *lab) addNetwork(n scenarioNetwork) error {
	if n.Name == "" {
		return fmt.Errorf("name is required")
	}
	dcName := n.Datacenter
	if dcName == "" {
		dcName = "DC0"
	}
	e, err := findEntity("Datacenter", dcName)
	if err != nil {
		return err
	}
	dc := e.(*simulator.Datacenter)
	hosts := datacenterHosts(dc)
	if len(hosts) == 0 {
		return fmt.Errorf("%s has no hosts", dcName)
	}
	// Every host gets the same vSwitch name: one more than the switches it has.
	vswitch := fmt.Sprintf("vSwitch%d", len(hosts[0].Config.Network.Vswitch))
	pgSpec := types.HostPortGroupSpec{Name: n.Name, VswitchName: vswitch, Policy: types.HostNetworkPolicy{}}

	// The library's AddPortGroup creates the Network entity (once per datacenter;
	// a second host would get DuplicateName), so call it on the first host only...
	first := object.NewHostNetworkSystem(l.client, *hosts[0].ConfigManager.NetworkSystem)
	if err := first.AddVirtualSwitch(l.ctx, vswitch, nil); err != nil {
		return err
	}
	if err := first.AddPortGroup(l.ctx, pgSpec); err != nil {
		return err
	}
	netEntity := simulator.Map.FindByName(n.Name, dc.Network)
	if netEntity == nil {
		return fmt.Errorf("port group created but network %q not found", n.Name)
	}
	netRef := netEntity.Reference()

	// ...then describe the switch and port group on every host the way a real
	// host does: in config.network and in its HostNetworkSystem.networkInfo.
	vs := types.HostVirtualSwitch{
		Name:              vswitch,
		Key:               "key-vim.host.VirtualSwitch-" + vswitch,
		NumPorts:          128,
		NumPortsAvailable: 120,
		Mtu:               1500,
		Portgroup:         []string{"key-vim.host.PortGroup-" + n.Name},
		Spec:              types.HostVirtualSwitchSpec{NumPorts: 128, Mtu: 1500},
	}
	if n.Uplinks {
		vs.Pnic = []string{"key-vim.host.PhysicalNic-vmnic1"}
		vs.Spec.Bridge = &types.HostVirtualSwitchBondBridge{NicDevice: []string{"vmnic1"}}
		vs.Spec.Policy = &types.HostNetworkPolicy{NicTeaming: &types.HostNicTeamingPolicy{
			NicOrder: &types.HostNicOrderPolicy{ActiveNic: []string{"vmnic1"}}}}
	}
	pg := types.HostPortGroup{
		Key:     "key-vim.host.PortGroup-" + n.Name,
		Vswitch: vs.Key,
		Spec:    pgSpec,
	}
	for _, h := range hosts {
		h := h
		simulator.Map.WithLock(h, func() {
			cfg := h.Config.Network
			cfg.Vswitch = append(append([]types.HostVirtualSwitch{}, cfg.Vswitch...), vs)
			cfg.Portgroup = append(append([]types.HostPortGroup{}, cfg.Portgroup...), pg)
			simulator.Map.Update(h, []types.PropertyChange{
				{Name: "network", Val: append(append([]types.ManagedObjectReference{}, h.Network...), netRef)},
			})
		})
		if ns, ok := simulator.Map.Get(*h.ConfigManager.NetworkSystem).(*simulator.HostNetworkSystem); ok {
			simulator.Map.WithLock(ns, func() {
				info := ns.NetworkInfo
				var switches []types.HostVirtualSwitch
				for _, s := range info.Vswitch {
					if s.Name != vswitch { // AddVirtualSwitch left a bare entry on the first host
						switches = append(switches, s)
					}
				}
				info.Vswitch = append(switches, vs)
				var groups []types.HostPortGroup
				for _, g := range info.Portgroup {
					if g.Spec.Name != n.Name {
						groups = append(groups, g)
					}
				}
				info.Portgroup = append(groups, pg)
			})
		}
	}
	if netObj, ok := netEntity.(*mo.Network); ok {
		simulator.Map.WithLock(netObj, func() {
			for _, h := range hosts {
				netObj.Host = append(netObj.Host, h.Self)
			}
		})
	}
	return nil
}

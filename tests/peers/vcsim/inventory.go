package main

// Finding things by the names tests use: inventory paths relative to the root
// ("DC0/vm/Schools/High/sis01"), or a plain name when it is unique.

import (
	"fmt"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// entityName returns the name of any managed entity; networks keep it outside ManagedEntity.
func entityName(e mo.Entity) string {
	if n := e.Entity().Name; n != "" {
		return n
	}
	switch x := e.(type) {
	case *mo.Network:
		return x.Name
	case *simulator.DistributedVirtualPortgroup:
		return x.Name
	case *simulator.DistributedVirtualSwitch:
		return x.Name
	}
	return ""
}

// inventoryPath is the path of e below the root folder, e.g. "DC0/vm/Schools/High/sis01".
func inventoryPath(e mo.Entity) string {
	var parts []string
	for e != nil {
		parent := e.Entity().Parent
		if parent == nil { // the root folder has no parent and is not part of paths
			break
		}
		parts = append(parts, entityName(e))
		e, _ = simulator.Map.Get(*parent).(mo.Entity)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

// parentPath is the inventory path of e's parent (the folder of a VM).
func parentPath(e mo.Entity) string {
	if p := e.Entity().Parent; p != nil {
		if pe, ok := simulator.Map.Get(*p).(mo.Entity); ok {
			return inventoryPath(pe)
		}
	}
	return ""
}

func cleanPath(p string) string { return strings.Trim(strings.TrimSpace(p), "/") }

// findEntity resolves a path or a unique name among the entities of one type.
func findEntity(kind, ref string) (mo.Entity, error) {
	ref = cleanPath(ref)
	if ref == "" {
		return nil, fmt.Errorf("no %s named", kind)
	}
	var byName []mo.Entity
	for _, e := range simulator.Map.All(kind) {
		if strings.Contains(ref, "/") {
			if inventoryPath(e) == ref {
				return e, nil
			}
		} else if entityName(e) == ref {
			byName = append(byName, e)
		}
	}
	switch len(byName) {
	case 1:
		return byName[0], nil
	case 0:
		return nil, fmt.Errorf("%s %q not found", kind, ref)
	default:
		return nil, fmt.Errorf("%d %s objects are named %q: use the inventory path", len(byName), kind, ref)
	}
}

func findVM(ref string) (*simulator.VirtualMachine, error) {
	e, err := findEntity("VirtualMachine", ref)
	if err != nil {
		return nil, err
	}
	return e.(*simulator.VirtualMachine), nil
}

// findAnyEntity looks in the kinds a control request may name (alarms, hosts...).
func findAnyEntity(ref string, kinds ...string) (mo.Entity, error) {
	var firstErr error
	for _, k := range kinds {
		e, err := findEntity(k, ref)
		if err == nil {
			return e, nil
		}
		if firstErr == nil || strings.Contains(err.Error(), "objects are named") {
			firstErr = err
		}
	}
	return nil, firstErr
}

// datacenterOf walks up to the entity's Datacenter.
func datacenterOf(e mo.Entity) *simulator.Datacenter {
	for e != nil {
		if dc, ok := e.(*simulator.Datacenter); ok {
			return dc
		}
		p := e.Entity().Parent
		if p == nil {
			return nil
		}
		e, _ = simulator.Map.Get(*p).(mo.Entity)
	}
	return nil
}

// networkName names the network a NIC backing points at.
func networkName(backing types.BaseVirtualDeviceBackingInfo) string {
	switch b := backing.(type) {
	case *types.VirtualEthernetCardNetworkBackingInfo:
		if b.Network != nil {
			if e, ok := simulator.Map.Get(*b.Network).(mo.Entity); ok {
				return entityName(e)
			}
		}
		return b.DeviceName
	case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
		ref := types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: b.Port.PortgroupKey}
		if e, ok := simulator.Map.Get(ref).(mo.Entity); ok {
			return entityName(e)
		}
		return b.Port.PortgroupKey
	case *types.VirtualEthernetCardOpaqueNetworkBackingInfo:
		return b.OpaqueNetworkId
	}
	return ""
}

// extraConfig returns the value of an extraConfig key. The library appends on
// every reconfigure instead of replacing, so the last entry wins; an empty value
// means "unset", as on a real host.
func extraConfig(vm *simulator.VirtualMachine, key string) (string, bool) {
	if vm.Config == nil {
		return "", false
	}
	val, found := "", false
	for _, o := range vm.Config.ExtraConfig {
		ov := o.GetOptionValue()
		if ov.Key == key {
			val, found = fmt.Sprint(ov.Value), true
		}
	}
	return val, found && val != ""
}

// setExtraConfig replaces (or appends) one key in place; callers hold the VM lock.
func setExtraConfig(vm *simulator.VirtualMachine, key, value string) {
	var out []types.BaseOptionValue
	for _, o := range vm.Config.ExtraConfig {
		if o.GetOptionValue().Key != key {
			out = append(out, o)
		}
	}
	if value != "" {
		out = append(out, &types.OptionValue{Key: key, Value: value})
	}
	simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.extraConfig", Val: out}})
}

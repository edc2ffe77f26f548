package main

// Task hooks: behaviour that must happen when a library task starts or ends.

import (
	"bytes"
	"log"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// deepCopy copies a vim25 value through its XML encoding, as the library does.
func deepCopy(src, dst interface{}) error {
	b, err := xml.Marshal(src)
	if err != nil {
		return err
	}
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.TypeFunc = types.TypeFunc()
	return dec.Decode(dst)
}

func copyDevices(devices []types.BaseVirtualDevice) ([]types.BaseVirtualDevice, error) {
	var out types.ArrayOfVirtualDevice
	err := deepCopy(&types.ArrayOfVirtualDevice{VirtualDevice: devices}, &out)
	return out.VirtualDevice, err
}

// taskQueued runs when a task is created, inside the method that created it.
func (l *lab) taskQueued(t *simulator.Task) {
	if t.Info.DescriptionId != "VirtualMachine.cloneVm" || t.Info.Entity == nil {
		return
	}
	// CloneVM_Task hands the source's own device structs to the clone and blanks
	// the source disks' file names on the way, so the source would end up pointing
	// at the clone's disks. Keep a copy to put back when the clone is done.
	src, ok := simulator.Map.Get(*t.Info.Entity).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	saved, err := copyDevices(src.Config.Hardware.Device)
	if err != nil {
		log.Printf("clone of %s: cannot save devices: %v", src.Name, err)
		return
	}
	l.mu.Lock()
	l.cloneSaved[t.Self] = saved
	l.mu.Unlock()
}

// taskFinished runs when a task succeeds or fails, in the goroutine that ran it.
func (l *lab) taskFinished(t *mo.Task) {
	var created *simulator.VirtualMachine
	if t.Info.State == types.TaskInfoStateSuccess {
		if ref, ok := t.Info.Result.(types.ManagedObjectReference); ok && ref.Type == "VirtualMachine" {
			created, _ = simulator.Map.Get(ref).(*simulator.VirtualMachine)
		}
	}
	switch t.Info.DescriptionId {
	case "Folder.createVm":
		// Also the inner task of CloneVM_Task and RegisterVM_Task: it finishes
		// before the outer task reports success, so clients never see a half-made VM.
		if created != nil {
			simulator.Map.WithLock(created, func() { l.guest.initVM(created) })
			l.registered(created)
		}
	case "VirtualMachine.cloneVm":
		l.cloneFinished(t, created)
	}
}

// cloneFinished puts the source's devices back and gives the clone the source's
// extraConfig (the library copies only the clone spec's): a clone of a VM that
// never boots never boots either. The source is locked by the running clone task.
func (l *lab) cloneFinished(t *mo.Task, clone *simulator.VirtualMachine) {
	l.mu.Lock()
	saved, ok := l.cloneSaved[t.Self]
	delete(l.cloneSaved, t.Self)
	l.mu.Unlock()
	src, isVM := simulator.Map.Get(*t.Info.Entity).(*simulator.VirtualMachine)
	if !isVM {
		return
	}
	if ok {
		simulator.Map.Update(src, []types.PropertyChange{{Name: "config.hardware.device", Val: saved}})
	}
	if clone == nil {
		return
	}
	inherited := src.Config.ExtraConfig
	simulator.Map.WithLock(clone, func() {
		mergeExtraConfig(clone, inherited)
		disconnectNICs(clone)
	})
}

// mergeExtraConfig adds the keys of extra the VM does not have yet (the last
// value of a repeated key wins); callers hold the VM lock.
func mergeExtraConfig(vm *simulator.VirtualMachine, extra []types.BaseOptionValue) {
	have := map[string]bool{}
	for _, o := range vm.Config.ExtraConfig {
		have[o.GetOptionValue().Key] = true
	}
	last := map[string]interface{}{}
	var order []string
	for _, o := range extra {
		ov := o.GetOptionValue()
		if have[ov.Key] {
			continue
		}
		if _, seen := last[ov.Key]; !seen {
			order = append(order, ov.Key)
		}
		last[ov.Key] = ov.Value
	}
	if len(order) == 0 {
		return
	}
	merged := append([]types.BaseOptionValue{}, vm.Config.ExtraConfig...)
	for _, k := range order {
		merged = append(merged, &types.OptionValue{Key: k, Value: last[k]})
	}
	simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.extraConfig", Val: merged}})
}

package main

// The lab ties the extensions together: one in-process client for building the
// scenario and running control requests, and one Registry handler that watches
// every object change (power state, finished tasks) to add the behaviour the
// library lacks without touching its code.

import (
	"context"
	"net/http"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	keyHostname  = "drcheck.lab.hostname"   // guest host name reported after boot
	keyBoot      = "drcheck.lab.boot"       // "never" or a Go duration overriding -boot-delay
	keyGuestExit = "drcheck.lab.guest_exit" // exit code of programs started in the guest
)

type lab struct {
	model  *simulator.Model
	opts   *options
	client *vim25.Client // in-process: no HTTP, authenticated as the library's internal session
	gate   *gate
	guest  *guestState
	power  *powerLog
	ctx    context.Context

	mu         sync.Mutex
	cloneSaved map[types.ManagedObjectReference][]types.BaseVirtualDevice // source devices saved while a clone runs
	alarms     map[string]*mo.Alarm                                       // alarm definitions made by /alarm, by name
	library    http.Handler                                               // the library's own HTTP handler, behind the gate
}

func newLab(m *simulator.Model, o *options) *lab {
	return &lab{
		model:      m,
		opts:       o,
		gate:       newGate(),
		guest:      newGuestState(o),
		power:      &powerLog{},
		ctx:        context.Background(),
		cloneSaved: map[types.ManagedObjectReference][]types.BaseVirtualDevice{},
		alarms:     map[string]*mo.Alarm{},
	}
}

// installHooks registers the change handler and brings the VMs the model already
// created (and maybe powered on) into the same state later VMs get.
func (l *lab) installHooks() error {
	c, err := vim25.NewClient(l.ctx, l.model.Service)
	if err != nil {
		return err
	}
	l.client = c
	simulator.Map.Put(l.guest.processManager())
	simulator.Map.AddHandler(&changeHandler{lab: l})
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		simulator.Map.WithLock(vm, func() {
			l.guest.initVM(vm)
			if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
				l.poweredOn(vm)
			}
		})
	}
	return nil
}

// changeHandler receives every Put/Update/Remove of the Registry. It runs in the
// goroutine that made the change, usually with the changed object locked, so it
// must never lock that object again; slow or locking work goes to goroutines.
type changeHandler struct{ lab *lab }

func (h *changeHandler) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "DrcheckLabHandler", Value: "lab"}
}

func (h *changeHandler) PutObject(o mo.Reference) {
	if t, ok := o.(*simulator.Task); ok {
		fixSnapshotTaskEntity(t)
		h.lab.taskQueued(t)
	}
}

func (h *changeHandler) UpdateObject(o mo.Reference, changes []types.PropertyChange) {
	switch obj := o.(type) {
	case *mo.VirtualMachine:
		for _, c := range changes {
			if c.Name != "runtime.powerState" {
				continue
			}
			vm, ok := simulator.Map.Get(obj.Self).(*simulator.VirtualMachine)
			if !ok {
				return
			}
			if c.Val == types.VirtualMachinePowerStatePoweredOn {
				h.lab.poweredOn(vm)
			} else {
				h.lab.guest.shutdown(vm)
			}
		}
	case *mo.Task:
		for _, c := range changes {
			if c.Name == "info.state" && (c.Val == types.TaskInfoStateSuccess || c.Val == types.TaskInfoStateError) {
				h.lab.taskFinished(obj)
			}
		}
	}
}

func (h *changeHandler) RemoveObject(types.ManagedObjectReference) {}

// poweredOn runs inside the power-on (VM locked): NICs connect as a real host
// connects them, the power-on is logged with those NIC states, the guest boots later.
func (l *lab) poweredOn(vm *simulator.VirtualMachine) {
	connectNICs(vm)
	l.power.record(vm)
	l.guest.boot(vm)
}

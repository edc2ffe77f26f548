package main

// Fixes for govmomi 0.24 simulator bugs that pyvmomi >= 8 trips over.

import (
	"reflect"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// fetchSafeCollector replaces the PropertyCollector singleton. The library's Fetch
// indexes MissingSet[0] when a property is unset (e.g. VirtualMachine.snapshot of a
// VM without snapshots) and panics; the client then sees the connection drop.
// pyvmomi >= 8 reads every managed-object attribute through Fetch, so an unset
// property must come back as an empty answer (None), as a real vCenter does.
// The per-session collectors are created from this type too (Session.Get uses
// reflect.New on the singleton's type), so every session gets the fix.
type fetchSafeCollector struct{ simulator.PropertyCollector }

type fetchResponse struct {
	Returnval types.AnyType `xml:"returnval,omitempty,typeattr"`
}

type fetchBody struct {
	Res    *fetchResponse `xml:"FetchResponse,omitempty"`
	Fault_ *soap.Fault    `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault,omitempty"`
}

func (b *fetchBody) Fault() *soap.Fault { return b.Fault_ }

// Fetch calls the library's Fetch; its request type lives in an internal package,
// so it is passed through untouched with reflection.
func (pc *fetchSafeCollector) Fetch(ctx *simulator.Context, req interface{}) (res soap.HasFault) {
	defer func() {
		if r := recover(); r != nil {
			res = &fetchBody{Res: &fetchResponse{}}
		}
	}()
	out := reflect.ValueOf(&pc.PropertyCollector).MethodByName("Fetch").Call(
		[]reflect.Value{reflect.ValueOf(ctx), reflect.ValueOf(req)})
	return out[0].Interface().(soap.HasFault)
}

// installFixes must run after Model.Create, which replaces simulator.Map.
func installFixes() {
	pc := &fetchSafeCollector{}
	pc.Self = serviceContent().PropertyCollector
	simulator.Map.Put(pc)
}

// fixSnapshotTaskEntity is called for every new Task. The library reports the
// snapshot, not its VM, as TaskInfo.entity of RevertToSnapshot_Task and
// RemoveSnapshot_Task; pyvmomi then fails to deserialize TaskInfo
// ("expected type vim.ManagedEntity"). A real vCenter reports the VM.
func fixSnapshotTaskEntity(t *simulator.Task) {
	if t.Info.Entity == nil || t.Info.Entity.Type != "VirtualMachineSnapshot" {
		return
	}
	snap, ok := simulator.Map.Get(*t.Info.Entity).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	vm := snap.Vm
	t.Info.Entity = &vm
	if v, ok := simulator.Map.Get(vm).(*simulator.VirtualMachine); ok {
		t.Info.EntityName = v.Name
	}
}

func serviceContent() types.ServiceContent {
	return simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance).Content
}

var _ mo.Reference = (*fetchSafeCollector)(nil)

package main

// The control API: a plain-HTTP listener, separate from the SOAP endpoint, that
// tests use to change the world behind a client's back (an outage, a datastore
// filling up, a backup product restoring a VM) and to see what clients did.
// JSON in and out; 200 on success, 4xx with {"error": "..."} otherwise.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// badRequest marks errors caused by the request (400); others are 404/409 by kind.
type badRequest struct{ error }

type notFound struct{ error }

func (l *lab) serveControl(addr string) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	mux := http.NewServeMux()
	routes := map[string]func(r *http.Request) (interface{}, error){
		"/health":      l.ctlHealth,
		"/outage":      l.ctlOutage,
		"/snapshot":    l.ctlSnapshot,
		"/vm":          l.ctlVM,
		"/datastore":   l.ctlDatastore,
		"/host":        l.ctlHost,
		"/alarm":       l.ctlAlarm,
		"/restore":     l.ctlRestore,
		"/export":      l.ctlExport,
		"/destroy":     l.ctlDestroy,
		"/power-log":   l.ctlPowerLog,
		"/calls":       l.ctlCalls,
		"/calls/reset": l.ctlCallsReset,
	}
	for path, fn := range routes {
		fn := fn
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { reply(w, r, fn) })
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("control API: %v", err)
		}
	}()
	return srv, "http://" + ln.Addr().String(), nil
}

func reply(w http.ResponseWriter, r *http.Request, fn func(*http.Request) (interface{}, error)) {
	out, err := fn(r)
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		status := http.StatusConflict
		var br badRequest
		var nf notFound
		switch {
		case errors.As(err, &br):
			status = http.StatusBadRequest
		case errors.As(err, &nf):
			status = http.StatusNotFound
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(out)
}

// decode reads a POST body strictly: unknown keys are errors, not silently ignored.
func decode(r *http.Request, dst interface{}) error {
	if r.Method != http.MethodPost {
		return badRequest{fmt.Errorf("%s needs POST", r.URL.Path)}
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return badRequest{err}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return badRequest{fmt.Errorf("request body: %w", err)}
	}
	return nil
}

func lookupVM(ref string) (*simulator.VirtualMachine, error) {
	vm, err := findVM(ref)
	if err != nil {
		return nil, notFound{err}
	}
	return vm, nil
}

func (l *lab) ctlHealth(r *http.Request) (interface{}, error) {
	mode, _ := l.gate.state()
	return map[string]interface{}{
		"ok":     true,
		"outage": mode,
		"vms":    len(simulator.Map.All("VirtualMachine")),
	}, nil
}

func (l *lab) ctlOutage(r *http.Request) (interface{}, error) {
	var req struct {
		Mode string `json:"mode"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if !validOutage(req.Mode) {
		return nil, badRequest{fmt.Errorf("mode %q: use refuse, hang or none", req.Mode)}
	}
	l.gate.set(req.Mode)
	return map[string]string{"mode": req.Mode}, nil
}

// findSnapshot returns the tree node named name (the last one if repeated).
func findSnapshot(tree []types.VirtualMachineSnapshotTree, name string) *types.VirtualMachineSnapshotTree {
	var found *types.VirtualMachineSnapshotTree
	for i := range tree {
		if tree[i].Name == name {
			found = &tree[i]
		}
		if f := findSnapshot(tree[i].ChildSnapshotList, name); f != nil {
			found = f
		}
	}
	return found
}

// setSnapshotTime backdates a snapshot; the library stamps createTime with "now".
func setSnapshotTime(vm *simulator.VirtualMachine, name string, at time.Time) error {
	var err error
	simulator.Map.WithLock(vm, func() {
		if vm.Snapshot == nil {
			err = notFound{fmt.Errorf("%s has no snapshots", vm.Name)}
			return
		}
		node := findSnapshot(vm.Snapshot.RootSnapshotList, name)
		if node == nil {
			err = notFound{fmt.Errorf("%s has no snapshot %q", vm.Name, name)}
			return
		}
		node.CreateTime = at
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "snapshot.rootSnapshotList", Val: vm.Snapshot.RootSnapshotList},
		})
	})
	return err
}

func (l *lab) ctlSnapshot(r *http.Request) (interface{}, error) {
	var req struct {
		VM       string `json:"vm"`
		Snapshot string `json:"snapshot"`
		Created  string `json:"created"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	at, err := time.Parse(time.RFC3339, req.Created)
	if err != nil {
		return nil, badRequest{fmt.Errorf("created: %w", err)}
	}
	vm, err := lookupVM(req.VM)
	if err != nil {
		return nil, err
	}
	if err := setSnapshotTime(vm, req.Snapshot, at); err != nil {
		return nil, err
	}
	return map[string]string{"vm": vm.Name, "snapshot": req.Snapshot, "created": at.UTC().Format(time.RFC3339)}, nil
}

func setConsolidation(vm *simulator.VirtualMachine, needed bool) {
	simulator.Map.WithLock(vm, func() {
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "runtime.consolidationNeeded", Val: needed},
			{Name: "summary.runtime.consolidationNeeded", Val: needed},
		})
	})
}

func (l *lab) ctlVM(r *http.Request) (interface{}, error) {
	var req struct {
		VM                  string  `json:"vm"`
		ConsolidationNeeded *bool   `json:"consolidation_needed"`
		Boot                *string `json:"boot"`
		Hostname            *string `json:"hostname"`
		GuestExit           *int    `json:"guest_exit"`
		Name                *string `json:"name"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	vm, err := lookupVM(req.VM)
	if err != nil {
		return nil, err
	}
	if req.Boot != nil && *req.Boot != "" && !strings.EqualFold(*req.Boot, "never") {
		if _, err := time.ParseDuration(*req.Boot); err != nil {
			return nil, badRequest{fmt.Errorf("boot: %q is neither never nor a duration", *req.Boot)}
		}
	}
	if req.ConsolidationNeeded != nil {
		setConsolidation(vm, *req.ConsolidationNeeded)
	}
	simulator.Map.WithLock(vm, func() {
		if req.Boot != nil {
			setExtraConfig(vm, keyBoot, *req.Boot)
		}
		if req.Hostname != nil {
			setExtraConfig(vm, keyHostname, *req.Hostname)
		}
		if req.GuestExit != nil {
			setExtraConfig(vm, keyGuestExit, fmt.Sprint(*req.GuestExit))
		}
		if req.Name != nil && *req.Name != "" {
			// A rename done in another client: no task, no event, just a new name.
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "name", Val: *req.Name},
				{Name: "config.name", Val: *req.Name},
				{Name: "summary.config.name", Val: *req.Name},
			})
		}
	})
	return vmSummary(vm), nil
}

func vmSummary(vm *simulator.VirtualMachine) map[string]interface{} {
	var out map[string]interface{}
	simulator.Map.WithLock(vm, func() {
		out = map[string]interface{}{
			"moref": vm.Self.Value,
			"name":  vm.Name,
			"path":  inventoryPath(vm),
			"uuid":  vm.Config.InstanceUuid,
			"power": string(vm.Runtime.PowerState),
		}
	})
	return out
}

func (l *lab) ctlDatastore(r *http.Request) (interface{}, error) {
	var req struct {
		Datastore  string `json:"datastore"`
		Capacity   *int64 `json:"capacity"`
		Free       *int64 `json:"free"`
		Accessible *bool  `json:"accessible"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	e, err := findEntity("Datastore", req.Datastore)
	if err != nil {
		return nil, notFound{err}
	}
	ds := e.(*simulator.Datastore)
	var out map[string]interface{}
	simulator.Map.WithLock(ds, func() {
		var changes []types.PropertyChange
		info := ds.Info.GetDatastoreInfo()
		if req.Capacity != nil {
			changes = append(changes, types.PropertyChange{Name: "summary.capacity", Val: *req.Capacity})
		}
		if req.Free != nil {
			info.FreeSpace = *req.Free
			changes = append(changes, types.PropertyChange{Name: "summary.freeSpace", Val: *req.Free})
		}
		if req.Accessible != nil {
			changes = append(changes, types.PropertyChange{Name: "summary.accessible", Val: *req.Accessible})
			status := types.ManagedEntityStatusGreen
			if !*req.Accessible {
				status = types.ManagedEntityStatusRed
			}
			changes = append(changes, types.PropertyChange{Name: "overallStatus", Val: status})
		}
		if len(changes) > 0 {
			simulator.Map.Update(ds, changes)
		}
		out = map[string]interface{}{
			"datastore": ds.Name, "capacity": ds.Summary.Capacity,
			"free": ds.Summary.FreeSpace, "accessible": ds.Summary.Accessible,
		}
	})
	return out, nil
}

func (l *lab) ctlHost(r *http.Request) (interface{}, error) {
	var req struct {
		Host            string  `json:"host"`
		ConnectionState *string `json:"connection_state"`
		Maintenance     *bool   `json:"maintenance"`
		OverallStatus   *string `json:"overall_status"`
		MemoryFreeMB    *int64  `json:"memory_free_mb"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	e, err := findEntity("HostSystem", req.Host)
	if err != nil {
		return nil, notFound{err}
	}
	h := e.(*simulator.HostSystem)
	if s := req.ConnectionState; s != nil {
		switch types.HostSystemConnectionState(*s) {
		case types.HostSystemConnectionStateConnected, types.HostSystemConnectionStateDisconnected,
			types.HostSystemConnectionStateNotResponding:
		default:
			return nil, badRequest{fmt.Errorf("connection_state %q: use connected, disconnected or notResponding", *s)}
		}
	}
	if s := req.OverallStatus; s != nil {
		switch types.ManagedEntityStatus(*s) {
		case types.ManagedEntityStatusGreen, types.ManagedEntityStatusYellow, types.ManagedEntityStatusRed, types.ManagedEntityStatusGray:
		default:
			return nil, badRequest{fmt.Errorf("overall_status %q: use green, yellow, red or gray", *s)}
		}
	}
	var out map[string]interface{}
	simulator.Map.WithLock(h, func() {
		var changes []types.PropertyChange
		if s := req.ConnectionState; s != nil {
			state := types.HostSystemConnectionState(*s)
			changes = append(changes,
				types.PropertyChange{Name: "runtime.connectionState", Val: state},
				types.PropertyChange{Name: "summary.runtime.connectionState", Val: state})
		}
		if m := req.Maintenance; m != nil {
			changes = append(changes,
				types.PropertyChange{Name: "runtime.inMaintenanceMode", Val: *m},
				types.PropertyChange{Name: "summary.runtime.inMaintenanceMode", Val: *m})
		}
		if s := req.OverallStatus; s != nil {
			status := types.ManagedEntityStatus(*s)
			changes = append(changes,
				types.PropertyChange{Name: "overallStatus", Val: status},
				types.PropertyChange{Name: "summary.overallStatus", Val: status})
		}
		if m := req.MemoryFreeMB; m != nil {
			total := h.Summary.Hardware.MemorySize / (1024 * 1024)
			used := int32(total - *m)
			if used < 0 {
				used = 0
			}
			changes = append(changes, types.PropertyChange{Name: "summary.quickStats.overallMemoryUsage", Val: used})
		}
		if len(changes) > 0 {
			simulator.Map.Update(h, changes)
		}
		out = map[string]interface{}{
			"host":             h.Name,
			"connection_state": string(h.Runtime.ConnectionState),
			"maintenance":      h.Runtime.InMaintenanceMode,
			"overall_status":   string(h.OverallStatus),
			"memory_used_mb":   h.Summary.QuickStats.OverallMemoryUsage,
		}
	})
	return out, nil
}

func (l *lab) ctlAlarm(r *http.Request) (interface{}, error) {
	var req struct {
		Entity string `json:"entity"`
		Alarm  string `json:"alarm"`
		Status string `json:"status"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	status := types.ManagedEntityStatus(req.Status)
	if status != types.ManagedEntityStatusRed && status != types.ManagedEntityStatusYellow {
		return nil, badRequest{fmt.Errorf("status %q: use red or yellow", req.Status)}
	}
	if req.Alarm == "" {
		return nil, badRequest{fmt.Errorf("alarm name is required")}
	}
	e, err := findAnyEntity(req.Entity, "VirtualMachine", "HostSystem", "Datastore",
		"ClusterComputeResource", "ComputeResource", "Datacenter", "Folder", "ResourcePool")
	if err != nil {
		return nil, notFound{err}
	}
	alarm := l.alarmNamed(req.Alarm, e.Reference().Type)
	state := types.AlarmState{
		Key:           fmt.Sprintf("alarm-%s.%s", alarm.Self.Value, e.Reference().Value),
		Entity:        e.Reference(),
		Alarm:         alarm.Self,
		OverallStatus: status,
		Time:          time.Now(),
	}
	simulator.Map.WithLock(e, func() {
		me := e.Entity()
		var states []types.AlarmState
		for _, s := range me.TriggeredAlarmState {
			if s.Alarm != alarm.Self {
				states = append(states, s)
			}
		}
		states = append(states, state)
		simulator.Map.Update(e, []types.PropertyChange{
			{Name: "triggeredAlarmState", Val: states},
			{Name: "declaredAlarmState", Val: states},
			{Name: "overallStatus", Val: worstStatus(states)},
		})
	})
	return map[string]string{"alarm": alarm.Self.Value, "entity": e.Reference().Value, "key": state.Key}, nil
}

func worstStatus(states []types.AlarmState) types.ManagedEntityStatus {
	worst := types.ManagedEntityStatusGreen
	for _, s := range states {
		if s.OverallStatus == types.ManagedEntityStatusRed {
			return s.OverallStatus
		}
		if s.OverallStatus == types.ManagedEntityStatusYellow {
			worst = s.OverallStatus
		}
	}
	return worst
}

// alarmNamed returns the Alarm definition with that name, creating it on the
// root folder as vCenter's predefined alarms are.
func (l *lab) alarmNamed(name, entityType string) *mo.Alarm {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a, ok := l.alarms[name]; ok {
		return a
	}
	a := &mo.Alarm{}
	a.Info = types.AlarmInfo{
		AlarmSpec: types.AlarmSpec{Name: name, Description: name, Enabled: true,
			Expression: &types.OrAlarmExpression{}},
		Entity:           serviceContent().RootFolder,
		LastModifiedTime: time.Now(),
		LastModifiedUser: "vpxd",
		CreationEventId:  0,
	}
	a.Self = types.ManagedObjectReference{Type: "Alarm", Value: fmt.Sprintf("alarm-%d", len(l.alarms)+101)}
	a.Info.Key = a.Self.Value
	a.Info.Alarm = a.Self
	simulator.Map.Put(a)
	l.alarms[name] = a
	return a
}

func (l *lab) ctlPowerLog(r *http.Request) (interface{}, error) {
	return l.power.list(), nil
}

func (l *lab) ctlCalls(r *http.Request) (interface{}, error) {
	return l.gate.counts(), nil
}

func (l *lab) ctlCallsReset(r *http.Request) (interface{}, error) {
	if r.Method != http.MethodPost {
		return nil, badRequest{fmt.Errorf("/calls/reset needs POST")}
	}
	l.gate.resetCounts()
	return map[string]bool{"reset": true}, nil
}

// ctlDestroy removes a VM as a backup product ending an instant recovery does:
// powered off first if on, then Destroy_Task (events, files and inventory as the
// library does them). The VM is named by moref (vm-42), inventory path or unique name.
func (l *lab) ctlDestroy(r *http.Request) (interface{}, error) {
	var req struct {
		VM string `json:"vm"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	vm, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: req.VM}).(*simulator.VirtualMachine)
	if !ok {
		var err error
		if vm, err = lookupVM(req.VM); err != nil {
			return nil, err
		}
	}
	out := vmSummary(vm)
	obj := object.NewVirtualMachine(l.client, vm.Self)
	if out["power"] == string(types.VirtualMachinePowerStatePoweredOn) {
		task, err := obj.PowerOff(l.ctx)
		if err == nil {
			err = task.Wait(l.ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("power off %s: %w", vm.Name, err)
		}
	}
	task, err := obj.Destroy(l.ctx)
	if err == nil {
		err = task.Wait(l.ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("destroy %s: %w", vm.Name, err)
	}
	out["power"] = "destroyed"
	return out, nil
}

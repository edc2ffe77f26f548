package main

// Guest simulation: the library powers VMs on but their guest never "boots"
// (tools stay not running, no IP), and it has no guest process manager. A
// restore test needs both: wait for heartbeat and IP, run a program, check its
// exit code. VM extraConfig keys drcheck.lab.* steer each VM (see lab.go).

import (
	"fmt"
	"hash/fnv"
	"path"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

type guestProcess struct {
	info types.GuestProcessInfo
	end  time.Time // when the program "exits"
}

type guestState struct {
	opts *options

	mu    sync.Mutex
	gen   map[types.ManagedObjectReference]uint64 // bumped on every power change: stale boots are dropped
	procs map[types.ManagedObjectReference][]*guestProcess
	pid   int64
}

func newGuestState(o *options) *guestState {
	return &guestState{
		opts:  o,
		gen:   map[types.ManagedObjectReference]uint64{},
		procs: map[types.ManagedObjectReference][]*guestProcess{},
		pid:   4000,
	}
}

func (g *guestState) bump(ref types.ManagedObjectReference) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gen[ref]++
	return g.gen[ref]
}

func (g *guestState) current(ref types.ManagedObjectReference) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen[ref]
}

// initVM gives a new VM what a real vCenter reports for a powered-off VM; the
// library leaves guestHeartbeatStatus unset (and Fetch of unset properties failed).
func (g *guestState) initVM(vm *simulator.VirtualMachine) {
	var changes []types.PropertyChange
	if vm.GuestHeartbeatStatus == "" {
		changes = append(changes, types.PropertyChange{Name: "guestHeartbeatStatus", Val: types.ManagedEntityStatusGray})
	}
	if vm.Config != nil && vm.Config.CreateDate == nil {
		changes = append(changes, types.PropertyChange{Name: "config.createDate", Val: time.Now()})
	}
	if len(changes) > 0 {
		simulator.Map.Update(vm, changes)
	}
}

// bootDelay is -boot-delay unless the VM's drcheck.lab.boot says otherwise;
// ok=false means the guest never boots.
func (g *guestState) bootDelay(vm *simulator.VirtualMachine) (time.Duration, bool) {
	v, set := extraConfig(vm, keyBoot)
	if !set {
		return g.opts.bootDelay, true
	}
	if strings.EqualFold(v, "never") {
		return 0, false
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return g.opts.bootDelay, true
	}
	return d, true
}

// boot schedules the guest coming up; called with the VM locked, at power-on.
func (g *guestState) boot(vm *simulator.VirtualMachine) {
	gen := g.bump(vm.Self)
	g.setGuest(vm, false) // a powered-on guest is still booting: tools not running yet
	delay, ok := g.bootDelay(vm)
	if !ok {
		return
	}
	time.AfterFunc(delay, func() {
		simulator.Map.WithLock(vm, func() {
			if g.current(vm.Self) != gen || vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
				return // powered off (or cycled) meanwhile
			}
			g.setGuest(vm, true)
		})
	})
}

// shutdown resets the guest when the VM powers off or suspends (VM locked).
func (g *guestState) shutdown(vm *simulator.VirtualMachine) {
	g.bump(vm.Self)
	g.setGuest(vm, false)
}

// fakeIP is a stable 10.x address derived from the moref, so a VM keeps its IP across boots.
func fakeIP(vm *simulator.VirtualMachine) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(vm.Self.Value))
	n := h.Sum32()
	return fmt.Sprintf("10.%d.%d.%d", (n>>16)&0xff, (n>>8)&0xff, 1+int(n&0xff)%253)
}

func guestHostname(vm *simulator.VirtualMachine) string {
	if h, ok := extraConfig(vm, keyHostname); ok {
		return h
	}
	return vm.Name
}

// setGuest publishes the guest as running (tools, heartbeat, IP, host name) or not.
func (g *guestState) setGuest(vm *simulator.VirtualMachine, running bool) {
	tools := types.VirtualMachineToolsRunningStatusGuestToolsNotRunning
	status := types.VirtualMachineToolsStatusToolsNotRunning
	state := "notRunning"
	heartbeat := types.ManagedEntityStatusGray
	ip, host := "", ""
	if running {
		tools = types.VirtualMachineToolsRunningStatusGuestToolsRunning
		status = types.VirtualMachineToolsStatusToolsOk
		state = "running"
		heartbeat = types.ManagedEntityStatusGreen
		ip, host = fakeIP(vm), guestHostname(vm)
	}
	// Copy guest.net: the library may share slices between objects.
	var nets []types.GuestNicInfo
	if vm.Guest != nil {
		for i, n := range vm.Guest.Net {
			n.IpAddress = nil
			n.IpConfig = nil
			if running && i == 0 {
				n.IpAddress = []string{ip}
				n.IpConfig = &types.NetIpConfigInfo{IpAddress: []types.NetIpConfigInfoIpAddress{{IpAddress: ip, PrefixLength: 24, State: "preferred"}}}
			}
			nets = append(nets, n)
		}
	}
	if running && len(nets) == 0 {
		nets = []types.GuestNicInfo{{IpAddress: []string{ip}, Connected: true, DeviceConfigId: -1}}
	}
	guestID := ""
	if vm.Config != nil {
		guestID = vm.Config.GuestId
	}
	changes := []types.PropertyChange{
		{Name: "guest.toolsRunningStatus", Val: string(tools)},
		{Name: "guest.toolsStatus", Val: status},
		{Name: "guest.toolsVersionStatus2", Val: "guestToolsCurrent"},
		{Name: "guest.toolsVersion", Val: "11333"},
		{Name: "guest.guestState", Val: state},
		{Name: "guest.ipAddress", Val: ip},
		{Name: "guest.hostName", Val: host},
		{Name: "guest.net", Val: nets},
		{Name: "guestHeartbeatStatus", Val: heartbeat},
		{Name: "summary.quickStats.guestHeartbeatStatus", Val: heartbeat},
		{Name: "summary.guest.toolsRunningStatus", Val: string(tools)},
		{Name: "summary.guest.toolsStatus", Val: status},
		{Name: "summary.guest.ipAddress", Val: ip},
		{Name: "summary.guest.hostName", Val: host},
	}
	if running && guestID != "" {
		changes = append(changes,
			types.PropertyChange{Name: "guest.guestId", Val: guestID},
			types.PropertyChange{Name: "summary.guest.guestId", Val: guestID})
	}
	simulator.Map.Update(vm, changes)
}

// connectNICs does what a host does at power-on: each NIC's connected state
// becomes its startConnected setting. Devices are copied first because the
// library shares device structs between VMs (the model and clones reuse them).
func connectNICs(vm *simulator.VirtualMachine) {
	setNICsConnected(vm, true)
}

// disconnectNICs: a powered-off VM (a fresh clone of a running one) has no NIC connected.
func disconnectNICs(vm *simulator.VirtualMachine) {
	setNICsConnected(vm, false)
}

// setNICsConnected copies the NICs with connected = startConnected (powerOn) or false.
func setNICsConnected(vm *simulator.VirtualMachine, powerOn bool) {
	if vm.Config == nil {
		return
	}
	changed := false
	devices := make([]types.BaseVirtualDevice, 0, len(vm.Config.Hardware.Device))
	for _, d := range vm.Config.Hardware.Device {
		if _, ok := d.(types.BaseVirtualEthernetCard); ok && d.GetVirtualDevice().Connectable != nil {
			cp := reflect.New(reflect.TypeOf(d).Elem())
			cp.Elem().Set(reflect.ValueOf(d).Elem())
			nd := cp.Interface().(types.BaseVirtualDevice)
			conn := *d.GetVirtualDevice().Connectable
			conn.Connected = powerOn && conn.StartConnected
			if conn.Connected {
				conn.Status = "ok"
			} else if !powerOn {
				conn.Status = "untried"
			}
			nd.GetVirtualDevice().Connectable = &conn
			d = nd
			changed = true
		}
		devices = append(devices, d)
	}
	if changed {
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: devices}})
	}
}

// --- guest operations ------------------------------------------------------------

// guestProcessManager replaces the library's GuestProcessManager, which has no methods in 0.24.
type guestProcessManager struct {
	mo.GuestProcessManager
	g *guestState
}

func (g *guestState) processManager() *guestProcessManager {
	pm := &guestProcessManager{g: g}
	pm.Self = types.ManagedObjectReference{Type: "GuestProcessManager", Value: "guestOperationsProcessManager"}
	if gom, ok := simulator.Map.Get(*serviceContent().GuestOperationsManager).(*simulator.GuestOperationsManager); ok && gom.ProcessManager != nil {
		pm.Self = *gom.ProcessManager
	}
	return pm
}

// prepare checks what a real vCenter checks before any guest operation.
func (pm *guestProcessManager) prepare(ref types.ManagedObjectReference, auth types.BaseGuestAuthentication) (*simulator.VirtualMachine, types.BaseMethodFault) {
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return nil, &types.ManagedObjectNotFound{Obj: ref}
	}
	var power types.VirtualMachinePowerState
	var tools string
	simulator.Map.WithLock(vm, func() {
		power = vm.Runtime.PowerState
		tools = vm.Guest.ToolsRunningStatus
	})
	if power != types.VirtualMachinePowerStatePoweredOn {
		return nil, &types.InvalidPowerState{RequestedState: types.VirtualMachinePowerStatePoweredOn, ExistingState: power}
	}
	if tools != string(types.VirtualMachineToolsRunningStatusGuestToolsRunning) {
		return nil, &types.GuestOperationsUnavailable{}
	}
	creds, ok := auth.(*types.NamePasswordAuthentication)
	if !ok || creds.Username != pm.g.opts.guestUser || creds.Password != pm.g.opts.guestPassword {
		return nil, &types.InvalidGuestLogin{}
	}
	return vm, nil
}

func (pm *guestProcessManager) StartProgramInGuest(ctx *simulator.Context, req *types.StartProgramInGuest) soap.HasFault {
	body := &methods.StartProgramInGuestBody{}
	vm, fault := pm.prepare(req.Vm, req.Auth)
	if fault != nil {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	exit := 0
	simulator.Map.WithLock(vm, func() {
		if v, ok := extraConfig(vm, keyGuestExit); ok {
			exit, _ = strconv.Atoi(v)
		}
	})
	prog := req.Spec.GetGuestProgramSpec()
	g := pm.g
	g.mu.Lock()
	g.pid++
	now := time.Now()
	p := &guestProcess{
		info: types.GuestProcessInfo{
			Name:      path.Base(strings.ReplaceAll(prog.ProgramPath, `\`, "/")),
			Pid:       g.pid,
			Owner:     g.opts.guestUser,
			CmdLine:   strings.TrimSpace(prog.ProgramPath + " " + prog.Arguments),
			StartTime: now,
		},
		end: now.Add(100 * time.Millisecond),
	}
	p.info.ExitCode = int32(exit)
	g.procs[vm.Self] = append(g.procs[vm.Self], p)
	g.mu.Unlock()
	body.Res = &types.StartProgramInGuestResponse{Returnval: p.info.Pid}
	return body
}

// ListProcessesInGuest is answered by the gate (see listProcesses): the library's
// encoder drops exitCode 0 (omitempty), and a client must see "exited with 0".
func (pm *guestProcessManager) ListProcessesInGuest(ctx *simulator.Context, req *types.ListProcessesInGuest) soap.HasFault {
	body := &methods.ListProcessesInGuestBody{}
	procs, fault := pm.list(req)
	if fault != nil {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	for _, p := range procs {
		body.Res = &types.ListProcessesInGuestResponse{}
		body.Res.Returnval = append(body.Res.Returnval, p.GuestProcessInfo)
	}
	if body.Res == nil {
		body.Res = &types.ListProcessesInGuestResponse{}
	}
	return body
}

// listedProcess is one process as the guest reports it; ended says whether
// endTime and exitCode are set.
type listedProcess struct {
	types.GuestProcessInfo
	ended bool
}

func (pm *guestProcessManager) list(req *types.ListProcessesInGuest) ([]listedProcess, types.BaseMethodFault) {
	vm, fault := pm.prepare(req.Vm, req.Auth)
	if fault != nil {
		return nil, fault
	}
	want := map[int64]bool{}
	for _, pid := range req.Pids {
		want[pid] = true
	}
	now := time.Now()
	g := pm.g
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []listedProcess
	for _, p := range g.procs[vm.Self] {
		if len(want) > 0 && !want[p.info.Pid] {
			continue
		}
		lp := listedProcess{GuestProcessInfo: p.info}
		if now.After(p.end) {
			end := p.end
			lp.EndTime, lp.ended = &end, true
		} else {
			lp.ExitCode = 0
		}
		out = append(out, lp)
	}
	return out, nil
}

func (pm *guestProcessManager) TerminateProcessInGuest(ctx *simulator.Context, req *types.TerminateProcessInGuest) soap.HasFault {
	body := &methods.TerminateProcessInGuestBody{}
	vm, fault := pm.prepare(req.Vm, req.Auth)
	if fault != nil {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	g := pm.g
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.procs[vm.Self] {
		if p.info.Pid == req.Pid {
			if time.Now().Before(p.end) {
				p.end = time.Now()
				p.info.ExitCode = 143 // killed by SIGTERM, as vmtoolsd reports it
			}
			body.Res = &types.TerminateProcessInGuestResponse{}
			return body
		}
	}
	body.Fault_ = simulator.Fault("", &types.GuestProcessNotFound{Pid: req.Pid})
	return body
}

// --- power log -------------------------------------------------------------------

type nicState struct {
	Label          string `json:"label"`
	Network        string `json:"network"`
	Connected      bool   `json:"connected"`
	StartConnected bool   `json:"start_connected"`
}

type powerOn struct {
	Time   string     `json:"time"`
	VM     string     `json:"vm"`
	UUID   string     `json:"uuid"`
	Folder string     `json:"folder"`
	NICs   []nicState `json:"nics"`
}

// powerLog keeps every power-on as it happened, so tests can prove a VM never
// powered on attached to a production network even if it was changed later.
type powerLog struct {
	mu      sync.Mutex
	entries []powerOn
}

func (p *powerLog) record(vm *simulator.VirtualMachine) {
	e := powerOn{
		Time:   time.Now().UTC().Format(time.RFC3339Nano),
		VM:     vm.Name,
		UUID:   vm.Config.InstanceUuid,
		Folder: parentPath(vm),
		NICs:   []nicState{},
	}
	for _, d := range vm.Config.Hardware.Device {
		if _, ok := d.(types.BaseVirtualEthernetCard); !ok {
			continue
		}
		dev := d.GetVirtualDevice()
		n := nicState{Network: networkName(dev.Backing)}
		if dev.DeviceInfo != nil {
			n.Label = dev.DeviceInfo.GetDescription().Label
		}
		if dev.Connectable != nil {
			n.Connected, n.StartConnected = dev.Connectable.Connected, dev.Connectable.StartConnected
		}
		e.NICs = append(e.NICs, n)
	}
	p.mu.Lock()
	p.entries = append(p.entries, e)
	p.mu.Unlock()
}

func (p *powerLog) list() []powerOn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]powerOn{}, p.entries...)
}

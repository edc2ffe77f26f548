package main

// "A backup product restored a VM" (/restore) and "an export-style backup wrote
// the VM's files" (/export), plus what RegisterVM_Task needs to bring such files
// back: the library registers a .vmx without reading it, so the simulator reads
// the .vmx it wrote and configures the new VM from it.

import (
	"bufio"
	"fmt"
	"log"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// --- /restore --------------------------------------------------------------------

func (l *lab) ctlRestore(r *http.Request) (interface{}, error) {
	var req struct {
		Source    string `json:"source"`
		Name      string `json:"name"`
		Folder    string `json:"folder"`
		Datastore string `json:"datastore"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.Name == "" {
		return nil, badRequest{fmt.Errorf("name is required")}
	}
	src, err := lookupVM(req.Source)
	if err != nil {
		return nil, err
	}
	folderPath := req.Folder
	if folderPath == "" {
		folderPath = parentPath(src)
	}
	folder, err := l.ensureFolder(folderPath)
	if err != nil {
		return nil, notFound{err}
	}
	spec := types.VirtualMachineCloneSpec{PowerOn: false}
	var pool, host types.ManagedObjectReference
	simulator.Map.WithLock(src, func() {
		host = *src.Runtime.Host
		if src.ResourcePool != nil {
			pool = *src.ResourcePool
		}
	})
	if pool.Value == "" { // a template has no pool: use its host's
		if h, ok := simulator.Map.Get(host).(*simulator.HostSystem); ok {
			if cr, ok := simulator.Map.Get(*h.Parent).(mo.Entity); ok {
				if p := computePool(cr); p != nil {
					pool = *p
				}
			}
		}
	}
	spec.Location.Pool = &pool
	spec.Location.Host = &host
	if req.Datastore != "" {
		e, err := findEntity("Datastore", req.Datastore)
		if err != nil {
			return nil, notFound{err}
		}
		ref := e.Reference()
		spec.Location.Datastore = &ref
	}
	task, err := object.NewVirtualMachine(l.client, src.Self).Clone(l.ctx, object.NewFolder(l.client, folder.Self), req.Name, spec)
	if err != nil {
		return nil, err
	}
	info, err := task.WaitForResult(l.ctx, nil)
	if err != nil {
		return nil, err
	}
	ref := info.Result.(types.ManagedObjectReference)
	vm := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	created, err := l.createdTime(ref)
	if err != nil {
		return nil, err
	}
	out := vmSummary(vm)
	out["created"] = created.UTC().Format(time.RFC3339Nano)
	return out, nil
}

// createdTime is the createdTime of the VM's VmCreatedEvent in the EventManager.
func (l *lab) createdTime(ref types.ManagedObjectReference) (time.Time, error) {
	events, err := event.NewManager(l.client).QueryEvents(l.ctx, types.EventFilterSpec{
		Entity: &types.EventFilterSpecByEntity{Entity: ref, Recursion: types.EventFilterSpecRecursionOptionSelf},
	})
	if err != nil {
		return time.Time{}, err
	}
	for _, e := range events {
		if c, ok := e.(*types.VmCreatedEvent); ok {
			return c.CreatedTime, nil
		}
	}
	return time.Time{}, fmt.Errorf("no VmCreatedEvent for %s", ref.Value)
}

// --- /export ---------------------------------------------------------------------

// vmxHardwareKeys are .vmx keys that describe hardware; every other key read back
// from an exported .vmx is extraConfig.
var vmxHardwareKeys = regexp.MustCompile(`^(\.encoding|config\.version|virtualHW\.version|displayName|guestOS|memSize|numvcpus|annotation|nvram|uuid\.|vc\.uuid|(scsi|ethernet|ide|sata|nvme)\d)`)

func vmxQuote(v string) string {
	return `"` + strings.NewReplacer(`|`, `|7C`, `"`, `|22`, "\n", `|0A`).Replace(v) + `"`
}

func vmxUnquote(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimSuffix(strings.TrimPrefix(v, `"`), `"`)
	return strings.NewReplacer(`|22`, `"`, `|0A`, "\n", `|7C`, `|`).Replace(v)
}

// exportedVM is what /export reads from a VM (under its lock) to write its files.
type exportedVM struct {
	name, guestID, annotation, uuid, instanceUUID string
	memoryMB, cpus                                int32
	disks                                         []int64 // capacities in bytes
	nics                                          []exportedNIC
	extra                                         [][2]string
}

type exportedNIC struct {
	network, portgroupKey, switchUUID, mac, device string
	startConnected                                 bool
}

func readForExport(vm *simulator.VirtualMachine) exportedVM {
	e := exportedVM{
		name: vm.Name, guestID: vm.Config.GuestId, annotation: vm.Config.Annotation,
		uuid: vm.Config.Uuid, instanceUUID: vm.Config.InstanceUuid,
		memoryMB: vm.Config.Hardware.MemoryMB, cpus: vm.Config.Hardware.NumCPU,
	}
	devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
	for _, d := range vm.Config.Hardware.Device {
		switch dev := d.(type) {
		case *types.VirtualDisk:
			e.disks = append(e.disks, dev.CapacityInKB*1024)
		case types.BaseVirtualEthernetCard:
			card := dev.GetVirtualEthernetCard()
			n := exportedNIC{network: networkName(card.Backing), mac: card.MacAddress, device: devices.Type(d)}
			if b, ok := card.Backing.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo); ok {
				n.portgroupKey, n.switchUUID = b.Port.PortgroupKey, b.Port.SwitchUuid
			}
			if card.Connectable != nil {
				n.startConnected = card.Connectable.StartConnected
			}
			e.nics = append(e.nics, n)
		}
	}
	last := map[string]string{}
	for _, o := range vm.Config.ExtraConfig {
		ov := o.GetOptionValue()
		last[ov.Key] = fmt.Sprint(ov.Value)
	}
	keys := make([]string, 0, len(last))
	for k := range last {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if last[k] != "" {
			e.extra = append(e.extra, [2]string{k, last[k]})
		}
	}
	return e
}

// vmxText renders a .vmx close to what ESXi writes (keys in the same spelling).
func (e exportedVM) vmxText() string {
	var b strings.Builder
	w := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, vmxQuote(v)) }
	w(".encoding", "UTF-8")
	w("config.version", "8")
	w("virtualHW.version", "13")
	w("displayName", e.name)
	w("guestOS", e.guestID)
	w("memSize", strconv.Itoa(int(e.memoryMB)))
	w("numvcpus", strconv.Itoa(int(e.cpus)))
	w("nvram", e.name+".nvram")
	if e.annotation != "" {
		w("annotation", e.annotation)
	}
	w("uuid.bios", e.uuid)
	w("vc.uuid", e.instanceUUID)
	if len(e.disks) > 0 {
		w("scsi0.present", "TRUE")
		w("scsi0.virtualDev", "pvscsi")
	}
	for i := range e.disks {
		name := e.name + ".vmdk"
		if i > 0 {
			name = fmt.Sprintf("%s_%d.vmdk", e.name, i)
		}
		w(fmt.Sprintf("scsi0:%d.present", i), "TRUE")
		w(fmt.Sprintf("scsi0:%d.fileName", i), name)
	}
	for i, n := range e.nics {
		p := fmt.Sprintf("ethernet%d", i)
		w(p+".present", "TRUE")
		w(p+".virtualDev", n.device)
		if n.portgroupKey != "" {
			w(p+".dvs.switchId", n.switchUUID)
			w(p+".dvs.portgroupId", n.portgroupKey)
		}
		w(p+".networkName", n.network)
		w(p+".addressType", "generated")
		w(p+".generatedAddress", n.mac)
		w(p+".startConnected", strings.ToUpper(strconv.FormatBool(n.startConnected)))
	}
	for _, kv := range e.extra {
		w(kv[0], kv[1])
	}
	return b.String()
}

// datastoreDir is the local directory behind a datastore.
func datastoreDir(name string) (*simulator.Datastore, string, error) {
	e, err := findEntity("Datastore", name)
	if err != nil {
		return nil, "", notFound{err}
	}
	ds := e.(*simulator.Datastore)
	return ds, ds.Info.GetDatastoreInfo().Url, nil
}

func (l *lab) ctlExport(r *http.Request) (interface{}, error) {
	var req struct {
		VM        string `json:"vm"`
		Datastore string `json:"datastore"`
		Dir       string `json:"dir"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	dir := path.Clean("/" + req.Dir)[1:]
	if dir == "" || strings.HasPrefix(req.Dir, "/") || strings.Contains(req.Dir, "..") {
		return nil, badRequest{fmt.Errorf("dir %q: a relative directory on the datastore", req.Dir)}
	}
	vm, err := lookupVM(req.VM)
	if err != nil {
		return nil, err
	}
	ds, root, err := datastoreDir(req.Datastore)
	if err != nil {
		return nil, err
	}
	var e exportedVM
	simulator.Map.WithLock(vm, func() { e = readForExport(vm) })
	local := filepath.Join(root, filepath.FromSlash(dir))
	vmx := filepath.Join(local, e.name+".vmx")
	if _, err := os.Stat(vmx); err == nil {
		return nil, fmt.Errorf("[%s] %s/%s.vmx already exists", ds.Name, dir, e.name)
	}
	if err := os.MkdirAll(local, 0o700); err != nil {
		return nil, err
	}
	files := map[string][]byte{
		e.name + ".vmx":   []byte(e.vmxText()),
		e.name + ".nvram": []byte("nvram\n"),
		"vmware.log":      []byte(time.Now().UTC().Format(time.RFC3339) + " exported by drcheck's vcsim\n"),
	}
	for i, capacity := range e.disks {
		base := e.name
		if i > 0 {
			base = fmt.Sprintf("%s_%d", e.name, i)
		}
		files[base+".vmdk"] = []byte(diskDescriptor(base, capacity))
		files[base+"-flat.vmdk"] = nil
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(local, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return map[string]string{"path": fmt.Sprintf("[%s] %s/%s.vmx", ds.Name, dir, e.name)}, nil
}

// diskDescriptor is a monolithic-flat VMDK descriptor; the flat extent is left empty.
func diskDescriptor(base string, capacity int64) string {
	return fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"+
		"createType=\"vmfs\"\n\n# Extent description\nRW %d VMFS \"%s-flat.vmdk\"\n\n"+
		"# The Disk Data Base\nddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"13\"\n", capacity/512, base)
}

// --- registering an exported .vmx ------------------------------------------------

func parseVMX(file string) (map[string]string, []string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	values := map[string]string{}
	var order []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		if _, seen := values[k]; !seen {
			order = append(order, k)
		}
		values[k] = vmxUnquote(v)
	}
	return values, order, sc.Err()
}

func diskCapacity(descriptor string) int64 {
	f, err := os.Open(descriptor)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "RW" {
			sectors, _ := strconv.ParseInt(fields[1], 10, 64)
			return sectors * 512
		}
	}
	return 0
}

// vmxFile is the local file behind the VM's configured .vmx path.
func vmxFile(vm *simulator.VirtualMachine) (string, string, string) {
	var p object.DatastorePath
	p.FromString(vm.Config.Files.VmPathName)
	_, root, err := datastoreDir(p.Datastore)
	if err != nil {
		return "", "", ""
	}
	return filepath.Join(root, filepath.FromSlash(p.Path)), p.Datastore, path.Dir(p.Path)
}

// registered configures a VM just created by RegisterVM_Task from the .vmx it
// was registered with: guest id, memory, CPUs, annotation, NICs, disks, extraConfig.
// The library creates empty .vmx files for new VMs, so a VM whose .vmx has
// content was registered from files someone (an export) wrote.
func (l *lab) registered(vm *simulator.VirtualMachine) {
	var file, dsName, dir string
	simulator.Map.WithLock(vm, func() { file, dsName, dir = vmxFile(vm) })
	values, order, err := parseVMX(file)
	if err != nil || len(values) == 0 {
		return
	}
	spec := types.VirtualMachineConfigSpec{
		GuestId:    values["guestOS"],
		Annotation: values["annotation"],
	}
	if n, err := strconv.Atoi(values["memSize"]); err == nil {
		spec.MemoryMB = int64(n)
	}
	if n, err := strconv.Atoi(values["numvcpus"]); err == nil {
		spec.NumCPUs = int32(n)
	}
	have := map[string]bool{}
	simulator.Map.WithLock(vm, func() {
		for _, o := range vm.Config.ExtraConfig {
			have[o.GetOptionValue().Key] = true
		}
	})
	for _, k := range order {
		if !vmxHardwareKeys.MatchString(k) && !have[k] {
			spec.ExtraConfig = append(spec.ExtraConfig, &types.OptionValue{Key: k, Value: values[k]})
		}
	}
	dc := datacenterOf(vm)
	var devices object.VirtualDeviceList
	if values["scsi0.present"] == "TRUE" {
		scsi, _ := devices.CreateSCSIController(values["scsi0.virtualDev"])
		if scsi == nil {
			scsi, _ = devices.CreateSCSIController("pvscsi")
		}
		devices = append(devices, scsi)
		for i := 0; i < 16; i++ {
			name := values[fmt.Sprintf("scsi0:%d.fileName", i)]
			if values[fmt.Sprintf("scsi0:%d.present", i)] != "TRUE" || name == "" {
				continue
			}
			ds := simulator.Map.FindByName(dsName, dc.Datastore)
			if ds == nil {
				continue
			}
			disk := devices.CreateDisk(scsi.(types.BaseVirtualController), ds.Reference(),
				fmt.Sprintf("[%s] %s/%s", dsName, dir, name))
			_, root, _ := datastoreDir(dsName)
			disk.CapacityInKB = diskCapacity(filepath.Join(root, dir, name)) / 1024
			devices = append(devices, disk)
		}
	}
	for i := 0; i < 10; i++ {
		p := fmt.Sprintf("ethernet%d", i)
		if values[p+".present"] != "TRUE" {
			continue
		}
		backing, err := l.networkBacking(dc, values[p+".networkName"])
		if err != nil {
			log.Printf("register %s: %s: %v", vm.Name, p, err)
			continue
		}
		card, err := object.VirtualDeviceList{}.CreateEthernetCard(values[p+".virtualDev"], backing)
		if err != nil {
			card, _ = object.VirtualDeviceList{}.CreateEthernetCard("vmxnet3", backing)
		}
		c := card.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		c.MacAddress = values[p+".generatedAddress"]
		c.DeviceInfo = &types.Description{Label: fmt.Sprintf("Network adapter %d", i+1), Summary: values[p+".networkName"]}
		c.Connectable = &types.VirtualDeviceConnectInfo{
			StartConnected: values[p+".startConnected"] != "FALSE", AllowGuestControl: true, Status: "untried"}
		devices = append(devices, card)
	}
	if len(devices) > 0 {
		spec.DeviceChange, _ = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
		for _, c := range spec.DeviceChange {
			if _, ok := c.GetVirtualDeviceConfigSpec().Device.(*types.VirtualDisk); ok {
				c.GetVirtualDeviceConfigSpec().FileOperation = "" // attach the exported disk, do not create one
			}
		}
	}
	task, err := object.NewVirtualMachine(l.client, vm.Self).Reconfigure(l.ctx, spec)
	if err == nil {
		err = task.Wait(l.ctx)
	}
	if err != nil {
		log.Printf("register %s: applying %s: %v", vm.Name, file, err)
		return
	}
	// vCenter reports a registration as such (the library only posts VmCreatedEvent).
	var ev types.VmRegisteredEvent
	simulator.Map.WithLock(vm, func() {
		ev.Vm = &types.VmEventArgument{EntityEventArgument: types.EntityEventArgument{Name: vm.Name}, Vm: vm.Self}
		ev.Datacenter = &types.DatacenterEventArgument{EntityEventArgument: types.EntityEventArgument{Name: dc.Name}, Datacenter: dc.Self}
		if vm.Runtime.Host != nil {
			if h, ok := simulator.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem); ok {
				ev.Host = &types.HostEventArgument{EntityEventArgument: types.EntityEventArgument{Name: h.Name}, Host: h.Self}
			}
		}
	})
	if err := event.NewManager(l.client).PostEvent(l.ctx, &ev); err != nil {
		log.Printf("register %s: posting VmRegisteredEvent: %v", vm.Name, err)
	}
}

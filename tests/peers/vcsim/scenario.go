package main

// The scenario file: folders, custom attributes, networks and VMs that tests
// describe on top of the generated inventory (section 1.2 of the shared spec).
// Everything is built through the in-process client, so the library's own
// code paths (events, files on the datastores, property updates) are used.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

type scenario struct {
	Folders      []string          `json:"folders"`
	CustomFields []string          `json:"custom_fields"`
	Networks     []scenarioNetwork `json:"networks"`
	VMs          []scenarioVM      `json:"vms"`
}

type scenarioNetwork struct {
	Datacenter string `json:"datacenter"`
	Name       string `json:"name"`
	Uplinks    bool   `json:"uplinks"`
}

type scenarioSnapshot struct {
	Name string `json:"name"`
	Age  string `json:"age"` // Go duration before now, e.g. "36h"
}

type scenarioVM struct {
	Name                string             `json:"name"`
	Folder              string             `json:"folder"`
	Cluster             string             `json:"cluster"`
	Host                string             `json:"host"`
	Datastore           string             `json:"datastore"`
	Network             string             `json:"network"`
	Networks            []string           `json:"networks"`
	GuestID             string             `json:"guest_id"`
	MemoryMB            int64              `json:"memory_mb"`
	CPUs                int32              `json:"cpus"`
	DiskMB              int64              `json:"disk_mb"`
	Power               string             `json:"power"`
	Annotation          string             `json:"annotation"`
	Attributes          map[string]string  `json:"attributes"`
	Snapshots           []scenarioSnapshot `json:"snapshots"`
	ConsolidationNeeded bool               `json:"consolidation_needed"`
	Boot                string             `json:"boot"`
	Hostname            string             `json:"hostname"`
	GuestExit           *int               `json:"guest_exit"`
	Template            bool               `json:"template"`
}

func (l *lab) applyScenarioFile(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var s scenario
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields() // a misspelt key should fail loudly, not be ignored
	if err := dec.Decode(&s); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	return l.applyScenario(&s)
}

func (l *lab) applyScenario(s *scenario) error {
	for _, f := range s.Folders {
		if _, err := l.ensureFolder(f); err != nil {
			return fmt.Errorf("folder %q: %w", f, err)
		}
	}
	for _, n := range s.Networks {
		if err := l.addNetwork(n); err != nil {
			return fmt.Errorf("network %q: %w", n.Name, err)
		}
	}
	dirs := map[string]int{}
	created := make([]*simulator.VirtualMachine, len(s.VMs))
	for i := range s.VMs {
		vm, err := l.createScenarioVM(&s.VMs[i], i, dirs)
		if err != nil {
			return fmt.Errorf("vm %q: %w", s.VMs[i].Name, err)
		}
		created[i] = vm
	}
	// Custom fields come after the VMs so every VM lists them in availableField.
	fields := map[string]int32{}
	for _, name := range s.CustomFields {
		if _, err := l.customField(name, fields); err != nil {
			return fmt.Errorf("custom field %q: %w", name, err)
		}
	}
	cfm := object.NewCustomFieldsManager(l.client)
	for i, spec := range s.VMs {
		for name, value := range spec.Attributes {
			key, err := l.customField(name, fields)
			if err != nil {
				return fmt.Errorf("custom field %q: %w", name, err)
			}
			if err := cfm.Set(l.ctx, created[i].Self, key, value); err != nil {
				return fmt.Errorf("vm %q attribute %q: %w", spec.Name, name, err)
			}
		}
	}
	return nil
}

// customField returns the key of a VirtualMachine custom field, creating it once.
func (l *lab) customField(name string, known map[string]int32) (int32, error) {
	if key, ok := known[name]; ok {
		return key, nil
	}
	cfm := object.NewCustomFieldsManager(l.client)
	if key, err := cfm.FindKey(l.ctx, name); err == nil {
		known[name] = key
		return key, nil
	}
	def, err := cfm.Add(l.ctx, name, "VirtualMachine", nil, nil)
	if err != nil {
		return 0, err
	}
	known[name] = def.Key
	return def.Key, nil
}

// childNamed finds a direct child of a folder or datacenter by name.
func childNamed(parent mo.Entity, name string) mo.Entity {
	var refs []types.ManagedObjectReference
	switch p := parent.(type) {
	case *simulator.Folder:
		refs = p.ChildEntity
	case *simulator.Datacenter:
		refs = []types.ManagedObjectReference{p.VmFolder, p.HostFolder, p.DatastoreFolder, p.NetworkFolder}
	}
	for _, ref := range refs {
		if e, ok := simulator.Map.Get(ref).(mo.Entity); ok && entityName(e) == name {
			return e
		}
	}
	return nil
}

// ensureFolder resolves "DC0/vm/A/B" from the root, creating missing folders
// below a datacenter's folders.
func (l *lab) ensureFolder(p string) (*simulator.Folder, error) {
	var cur mo.Entity = simulator.Map.Get(serviceContent().RootFolder).(mo.Entity)
	for _, part := range strings.Split(cleanPath(p), "/") {
		next := childNamed(cur, part)
		if next == nil {
			f, ok := cur.(*simulator.Folder)
			if !ok || datacenterOf(f) == nil {
				return nil, fmt.Errorf("%q not found below %q", part, inventoryPath(cur))
			}
			ref, err := object.NewFolder(l.client, f.Self).CreateFolder(l.ctx, part)
			if err != nil {
				return nil, err
			}
			next = simulator.Map.Get(ref.Reference()).(mo.Entity)
		}
		cur = next
	}
	f, ok := cur.(*simulator.Folder)
	if !ok {
		return nil, fmt.Errorf("%q is a %s, not a folder", p, cur.Reference().Type)
	}
	return f, nil
}

// computeFor finds the cluster (or standalone host's compute resource) a VM goes to.
func computeFor(name string, dcHint string) (mo.Entity, error) {
	if name != "" {
		return findAnyEntity(name, "ClusterComputeResource", "ComputeResource")
	}
	for _, kind := range []string{"ClusterComputeResource", "ComputeResource"} {
		var best mo.Entity
		for _, e := range simulator.Map.All(kind) {
			if dcHint != "" && !strings.HasPrefix(inventoryPath(e), dcHint+"/") {
				continue
			}
			if best == nil || inventoryPath(e) < inventoryPath(best) {
				best = e
			}
		}
		if best != nil {
			return best, nil
		}
	}
	return nil, fmt.Errorf("no cluster or host")
}

func computeHosts(cr mo.Entity) []types.ManagedObjectReference {
	switch c := cr.(type) {
	case *simulator.ClusterComputeResource:
		return c.Host
	case *mo.ComputeResource:
		return c.Host
	}
	return nil
}

func computePool(cr mo.Entity) *types.ManagedObjectReference {
	switch c := cr.(type) {
	case *simulator.ClusterComputeResource:
		return c.ResourcePool
	case *mo.ComputeResource:
		return c.ResourcePool
	}
	return nil
}

// networkBacking builds the NIC backing for a network name in a datacenter.
func (l *lab) networkBacking(dc *simulator.Datacenter, name string) (types.BaseVirtualDeviceBackingInfo, error) {
	for _, ref := range dc.Network {
		e, ok := simulator.Map.Get(ref).(mo.Entity)
		if !ok || entityName(e) != name {
			continue
		}
		switch ref.Type {
		case "DistributedVirtualPortgroup":
			return object.NewDistributedVirtualPortgroup(l.client, ref).EthernetCardBackingInfo(l.ctx)
		case "Network":
			return object.NewNetwork(l.client, ref).EthernetCardBackingInfo(l.ctx)
		}
	}
	return nil, fmt.Errorf("network %q not found in %s", name, dc.Name)
}

// newNIC is a vmxnet3 card that connects at power-on but is not connected now.
func newNIC(backing types.BaseVirtualDeviceBackingInfo, n int, network string) (types.BaseVirtualDevice, error) {
	nic, err := object.VirtualDeviceList{}.CreateEthernetCard("vmxnet3", backing)
	if err != nil {
		return nil, err
	}
	// The label a real vCenter shows; the library would make up "ethernet-N".
	nic.GetVirtualDevice().DeviceInfo = &types.Description{Label: fmt.Sprintf("Network adapter %d", n), Summary: network}
	nic.GetVirtualDevice().Connectable = &types.VirtualDeviceConnectInfo{
		StartConnected: true, AllowGuestControl: true, Connected: false, Status: "untried",
	}
	return nic, nil
}

func (l *lab) createScenarioVM(spec *scenarioVM, index int, dirs map[string]int) (*simulator.VirtualMachine, error) {
	if spec.Name == "" {
		return nil, fmt.Errorf("name is required")
	}
	if b := spec.Boot; b != "" && !strings.EqualFold(b, "never") {
		if _, err := time.ParseDuration(b); err != nil {
			return nil, fmt.Errorf("boot %q is neither never nor a duration", b)
		}
	}
	dcHint := ""
	if spec.Folder != "" {
		dcHint = strings.SplitN(cleanPath(spec.Folder), "/", 2)[0]
	}
	cr, err := computeFor(spec.Cluster, dcHint)
	if err != nil {
		return nil, err
	}
	dc := datacenterOf(cr)
	folderPath := spec.Folder
	if folderPath == "" {
		folderPath = inventoryPath(dc) + "/vm"
	}
	folder, err := l.ensureFolder(folderPath)
	if err != nil {
		return nil, err
	}
	if datacenterOf(folder) != dc {
		return nil, fmt.Errorf("folder %q and cluster %q are in different datacenters", folderPath, entityName(cr))
	}
	dsName := spec.Datastore
	if dsName == "" {
		dsName = "LocalDS_0"
	}
	ds := simulator.Map.FindByName(dsName, dc.Datastore)
	if ds == nil {
		return nil, fmt.Errorf("datastore %q not found in %s", dsName, dc.Name)
	}
	// Hosts in turn, so placement is the same every run (the library picks randomly).
	var hostRef *types.ManagedObjectReference
	if spec.Host != "" {
		h, err := findEntity("HostSystem", spec.Host)
		if err != nil {
			return nil, err
		}
		r := h.Reference()
		hostRef = &r
	} else if hosts := computeHosts(cr); len(hosts) > 0 {
		r := hosts[index%len(hosts)]
		hostRef = &r
	}

	// A directory of its own even for duplicate names (in different folders).
	dir := spec.Name
	dirs[dir]++
	if n := dirs[dir]; n > 1 {
		dir = fmt.Sprintf("%s_%d", spec.Name, n)
	}
	vmx := fmt.Sprintf("[%s] %s/%s.vmx", dsName, dir, spec.Name)

	guestID := spec.GuestID
	if guestID == "" {
		guestID = string(types.VirtualMachineGuestOsIdentifierOtherGuest64)
	}
	memory, cpus, diskMB := spec.MemoryMB, spec.CPUs, spec.DiskMB
	if memory == 0 {
		memory = 256
	}
	if cpus == 0 {
		cpus = 1
	}
	if diskMB == 0 {
		diskMB = 1024
	}

	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return nil, err
	}
	devices = append(devices, scsi)
	disk := devices.CreateDisk(scsi.(types.BaseVirtualController), ds.Reference(), fmt.Sprintf("[%s] %s/%s.vmdk", dsName, dir, spec.Name))
	disk.CapacityInKB = diskMB * 1024
	devices = append(devices, disk)
	networks := spec.Networks
	if spec.Network != "" {
		networks = append([]string{spec.Network}, networks...)
	} else if networks == nil {
		networks = []string{"VM Network"} // "networks": [] means no NIC at all
	}
	for i, name := range networks {
		backing, err := l.networkBacking(dc, name)
		if err != nil {
			return nil, err
		}
		nic, err := newNIC(backing, i+1, name)
		if err != nil {
			return nil, err
		}
		devices = append(devices, nic)
	}
	changes, err := devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	if err != nil {
		return nil, err
	}
	changes[1].GetVirtualDeviceConfigSpec().FileOperation = types.VirtualDeviceConfigSpecFileOperationCreate

	config := types.VirtualMachineConfigSpec{
		Name:         spec.Name,
		GuestId:      guestID,
		MemoryMB:     memory,
		NumCPUs:      cpus,
		Annotation:   spec.Annotation,
		Files:        &types.VirtualMachineFileInfo{VmPathName: vmx},
		DeviceChange: changes,
		ExtraConfig:  labExtraConfig(spec),
	}
	var host *object.HostSystem
	if hostRef != nil {
		host = object.NewHostSystem(l.client, *hostRef)
	}
	task, err := object.NewFolder(l.client, folder.Self).CreateVM(l.ctx, config,
		object.NewResourcePool(l.client, *computePool(cr)), host)
	if err != nil {
		return nil, err
	}
	info, err := task.WaitForResult(l.ctx, nil)
	if err != nil {
		return nil, err
	}
	vmRef := info.Result.(types.ManagedObjectReference)
	vm := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	ovm := object.NewVirtualMachine(l.client, vmRef)

	for _, snap := range spec.Snapshots {
		age, err := time.ParseDuration(snap.Age)
		if snap.Age == "" {
			age, err = 0, nil
		}
		if err != nil {
			return nil, fmt.Errorf("snapshot %q age: %w", snap.Name, err)
		}
		t, err := ovm.CreateSnapshot(l.ctx, snap.Name, "", false, false)
		if err != nil {
			return nil, err
		}
		if err := t.Wait(l.ctx); err != nil {
			return nil, err
		}
		if err := setSnapshotTime(vm, snap.Name, time.Now().Add(-age)); err != nil {
			return nil, err
		}
	}
	if spec.ConsolidationNeeded {
		setConsolidation(vm, true)
	}
	if spec.Template {
		if err := ovm.MarkAsTemplate(l.ctx); err != nil {
			return nil, err
		}
	}
	switch strings.ToLower(spec.Power) {
	case "", "off", "poweredoff":
	case "on", "poweredon":
		t, err := ovm.PowerOn(l.ctx)
		if err != nil {
			return nil, err
		}
		if err := t.Wait(l.ctx); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("power %q: use on or off", spec.Power)
	}
	return vm, nil
}

// labExtraConfig turns the scenario's guest knobs into the VM's extraConfig,
// where they travel with clones, exports and registrations.
func labExtraConfig(spec *scenarioVM) []types.BaseOptionValue {
	var out []types.BaseOptionValue
	add := func(k, v string) {
		if v != "" {
			out = append(out, &types.OptionValue{Key: k, Value: v})
		}
	}
	add(keyBoot, spec.Boot)
	add(keyHostname, spec.Hostname)
	if spec.GuestExit != nil {
		add(keyGuestExit, fmt.Sprint(*spec.GuestExit))
	}
	return out
}

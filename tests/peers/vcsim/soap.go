package main

// SOAP methods the library lacks or gets wrong, answered in front of it (the
// library dispatches by reflection on its own types, so methods cannot be added
// to its VirtualMachine): CreateScreenshot_Task, and the preparation
// RegisterVM_Task needs.

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// soapExtra is the gate's hook: handled=true means the request was answered
// here; otherwise the library gets body (possibly rewritten).
func (l *lab) soapExtra(method string, body []byte, w http.ResponseWriter, r *http.Request) (bool, []byte) {
	switch method {
	case "CreateScreenshot_Task":
		l.createScreenshot(body, w, r)
		return true, nil
	case "RegisterVM_Task":
		return false, prepareRegistration(body)
	case "ListProcessesInGuest":
		l.listProcesses(body, w, r)
		return true, nil
	}
	return false, body
}

// authenticated asks the library whether the request's session cookie is valid,
// by sending it a call that needs a session.
func (l *lab) authenticated(r *http.Request) bool {
	const probe = `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime></soapenv:Body></soapenv:Envelope>`
	req := httptest.NewRequest(http.MethodPost, "/sdk", strings.NewReader(probe))
	for _, c := range r.Cookies() {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	l.library.ServeHTTP(rec, req)
	return rec.Code == http.StatusOK
}

func writeSOAP(w http.ResponseWriter, status int, inner string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `%s<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" `+
		`xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" `+
		`xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>%s</soapenv:Body></soapenv:Envelope>`,
		xml.Header, inner)
}

func escape(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// writeFault sends a vim fault whose detail element has no fields (or one moref).
func writeFault(w http.ResponseWriter, kind, msg string, obj *types.ManagedObjectReference) {
	detail := ""
	if obj != nil {
		detail = fmt.Sprintf(`<obj type="%s">%s</obj>`, obj.Type, escape(obj.Value))
	}
	writeSOAP(w, http.StatusInternalServerError, fmt.Sprintf(
		`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring>`+
			`<detail><%sFault xmlns="urn:vim25" xsi:type="%s">%s</%sFault></detail></soapenv:Fault>`,
		escape(msg), kind, kind, detail, kind))
}

// createScreenshot writes a small PNG into the VM's directory and returns, as the
// task result, its datastore path ("[LocalDS_0] vm/vm-1.png"), downloadable over
// the /folder endpoint like any datastore file.
func (l *lab) createScreenshot(body []byte, w http.ResponseWriter, r *http.Request) {
	method, ok := l.decode(body, w, r)
	if !ok {
		return
	}
	vm, ok := simulator.Map.Get(method.This).(*simulator.VirtualMachine)
	if !ok {
		writeFault(w, "ManagedObjectNotFound", "managed object not found: "+method.This.Value, &method.This)
		return
	}
	var ref types.ManagedObjectReference
	simulator.Map.WithLock(vm, func() {
		task := simulator.CreateTask(vm, "createScreenshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
				return nil, &types.InvalidPowerState{RequestedState: types.VirtualMachinePowerStatePoweredOn,
					ExistingState: vm.Runtime.PowerState}
			}
			return writeScreenshot(vm)
		})
		ref = task.Run()
	})
	writeSOAP(w, http.StatusOK, fmt.Sprintf(
		`<CreateScreenshot_TaskResponse xmlns="urn:vim25"><returnval type="Task">%s</returnval></CreateScreenshot_TaskResponse>`,
		escape(ref.Value)))
}

func writeScreenshot(vm *simulator.VirtualMachine) (types.AnyType, types.BaseMethodFault) {
	var p object.DatastorePath
	p.FromString(vm.Config.Files.VmPathName)
	_, root, err := datastoreDir(p.Datastore)
	if err != nil {
		return nil, &types.FileFault{File: vm.Config.Files.VmPathName}
	}
	dir := path.Dir(p.Path)
	var name string
	for i := 1; ; i++ {
		name = fmt.Sprintf("%s-%d.png", vm.Name, i)
		if _, err := os.Stat(filepath.Join(root, dir, name)); os.IsNotExist(err) {
			break
		}
	}
	// A dark "console" with a lighter first line: enough for an image check.
	img := image.NewRGBA(image.Rect(0, 0, 160, 120))
	for y := 0; y < 120; y++ {
		for x := 0; x < 160; x++ {
			c := color.RGBA{R: 16, G: 24, B: 48, A: 255}
			if y >= 8 && y < 14 && x >= 8 && x < 120 {
				c = color.RGBA{R: 200, G: 200, B: 200, A: 255}
			}
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, &types.FileFault{File: name}
	}
	if err := os.WriteFile(filepath.Join(root, dir, name), buf.Bytes(), 0o600); err != nil {
		return nil, &types.CannotCreateFile{FileFault: types.FileFault{File: name}}
	}
	return fmt.Sprintf("[%s] %s", p.Datastore, path.Join(dir, name)), nil
}

// prepareRegistration makes RegisterVM_Task work on exported files. vCenter
// names an unnamed registration after the .vmx's displayName; the library uses
// the directory path, so the name is put into the request. The library also
// insists on "<name>.nvram" and vmware.log next to the .vmx (vCenter would make
// new ones), so empty ones are created when missing.
func prepareRegistration(body []byte) []byte {
	method, err := simulator.UnmarshalBody(types.TypeFunc(), body)
	if err != nil {
		return body
	}
	req, ok := method.Body.(*types.RegisterVM_Task)
	if !ok {
		return body
	}
	var p object.DatastorePath
	if !p.FromString(req.Path) {
		return body
	}
	_, root, err := datastoreDir(p.Datastore)
	if err != nil {
		return body
	}
	local := filepath.Join(root, filepath.FromSlash(p.Path))
	values, _, err := parseVMX(local)
	if err != nil {
		return body // the library answers NotFound
	}
	name := req.Name
	if name == "" {
		name = values["displayName"]
		if name == "" {
			name = strings.TrimSuffix(path.Base(p.Path), ".vmx")
		}
		if loc := closingPath.FindSubmatchIndex(body); loc != nil {
			prefix := ""
			if loc[2] >= 0 { // the optional namespace prefix matched
				prefix = string(body[loc[2]:loc[3]])
			}
			element := fmt.Sprintf("<%sname>%s</%sname>", prefix, escape(name), prefix)
			body = append(append(append([]byte{}, body[:loc[1]]...), element...), body[loc[1]:]...)
		}
	}
	for _, f := range []string{name + ".nvram", "vmware.log"} {
		file := filepath.Join(filepath.Dir(local), f)
		if _, err := os.Stat(file); os.IsNotExist(err) {
			_ = os.WriteFile(file, nil, 0o600)
		}
	}
	return body
}

// closingPath finds the end of RegisterVM_Task's path element (any namespace prefix).
var closingPath = regexp.MustCompile(`</([A-Za-z0-9_]+:)?path>`)

// listProcesses answers ListProcessesInGuest with exitCode always present for an
// ended process (the library's encoder would omit a 0).
func (l *lab) listProcesses(body []byte, w http.ResponseWriter, r *http.Request) {
	method, ok := l.decode(body, w, r)
	if !ok {
		return
	}
	req, ok := method.Body.(*types.ListProcessesInGuest)
	if !ok {
		writeFault(w, "InvalidRequest", "not ListProcessesInGuest", nil)
		return
	}
	pm := simulator.Map.Get(req.This).(*guestProcessManager)
	var procs []listedProcess
	var fault types.BaseMethodFault
	simulator.Map.WithLock(pm, func() { procs, fault = pm.list(req) })
	if fault != nil {
		kind := reflect.TypeOf(fault).Elem().Name()
		writeFault(w, kind, kind, nil)
		return
	}
	var b strings.Builder
	b.WriteString(`<ListProcessesInGuestResponse xmlns="urn:vim25">`)
	for _, p := range procs {
		fmt.Fprintf(&b, "<returnval><name>%s</name><pid>%d</pid><owner>%s</owner><cmdLine>%s</cmdLine><startTime>%s</startTime>",
			escape(p.Name), p.Pid, escape(p.Owner), escape(p.CmdLine), p.StartTime.UTC().Format(time.RFC3339Nano))
		if p.ended {
			fmt.Fprintf(&b, "<endTime>%s</endTime><exitCode>%d</exitCode>", p.EndTime.UTC().Format(time.RFC3339Nano), p.ExitCode)
		}
		b.WriteString("</returnval>")
	}
	b.WriteString(`</ListProcessesInGuestResponse>`)
	writeSOAP(w, http.StatusOK, b.String())
}

// decode unmarshals the SOAP call of an authenticated session; otherwise it answers
// with the fault a vCenter gives and returns false.
func (l *lab) decode(body []byte, w http.ResponseWriter, r *http.Request) (*simulator.Method, bool) {
	if !l.authenticated(r) {
		writeFault(w, "NotAuthenticated", "not authenticated", nil)
		return nil, false
	}
	method, err := simulator.UnmarshalBody(types.TypeFunc(), body)
	if err != nil {
		writeFault(w, "InvalidRequest", err.Error(), nil)
		return nil, false
	}
	return method, true
}

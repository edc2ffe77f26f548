// Command vcsim is drcheck's vCenter simulator: govmomi 0.24's simulator library
// (Debian ships the library, not govmomi's own vcsim program) plus what drcheck's
// tests need and the library lacks: a scenario file, guest boot and guest
// operations, a control API to inject faults and inspect what clients did.
//
// See README.md next to this file for the flags, generated names and the control API.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // REST endpoints (tags), as govmomi's vcsim has
)

// options are the flags beyond the inventory-size ones that go straight into the Model.
type options struct {
	listen, username, password string
	noTLS                      bool
	certFile, keyFile          string
	control                    string
	scenario                   string
	bootDelay                  time.Duration
	guestUser, guestPassword   string
	delayMS                    int
}

func parseFlags(m *simulator.Model) *options {
	o := &options{}
	flag.StringVar(&o.listen, "l", "127.0.0.1:8989", "listen address for the SOAP endpoint (port 0: any free port)")
	flag.StringVar(&o.username, "username", "user", "login username")
	flag.StringVar(&o.password, "password", "pass", "login password")
	flag.BoolVar(&o.noTLS, "notls", false, "serve plain http")
	flag.StringVar(&o.certFile, "cert", "", "PEM certificate to serve (default: the library's built-in localhost certificate)")
	flag.StringVar(&o.keyFile, "key", "", "PEM private key of -cert")
	flag.StringVar(&o.control, "control", "", "plain-HTTP control API listen address, e.g. 127.0.0.1:0 (off when empty)")
	flag.StringVar(&o.scenario, "scenario", "", "JSON scenario applied after the generated inventory")
	flag.DurationVar(&o.bootDelay, "boot-delay", time.Second, "time from power-on until the guest has booted (tools running, IP)")
	flag.StringVar(&o.guestUser, "guest-user", "lab", "guest operations user name")
	flag.StringVar(&o.guestPassword, "guest-password", "lab", "guest operations password")
	flag.IntVar(&m.Datacenter, "dc", m.Datacenter, "datacenters")
	flag.IntVar(&m.Folder, "folder", m.Folder, "datacenters placed in folders")
	flag.IntVar(&m.Cluster, "cluster", m.Cluster, "clusters per datacenter")
	flag.IntVar(&m.ClusterHost, "host", m.ClusterHost, "hosts per cluster")
	flag.IntVar(&m.Host, "standalone-host", m.Host, "standalone hosts per datacenter")
	flag.IntVar(&m.Pool, "pool", m.Pool, "child resource pools per cluster (they get no VMs)")
	flag.IntVar(&m.Datastore, "ds", m.Datastore, "datastores per datacenter")
	flag.IntVar(&m.Machine, "vm", m.Machine, "VMs per cluster, per standalone host and per vApp")
	flag.IntVar(&m.Portgroup, "pg", m.Portgroup, "distributed port groups per datacenter")
	flag.IntVar(&m.App, "app", m.App, "vApps per cluster")
	flag.BoolVar(&m.Autostart, "autostart", m.Autostart, "power on the generated VMs")
	flag.IntVar(&o.delayMS, "delay", 0, "milliseconds of delay added to every SOAP call")
	flag.Parse()
	return o
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	m := simulator.VPX()
	o := parseFlags(m)

	started := time.Now()
	if err := m.Create(); err != nil {
		log.Fatalf("create inventory: %v", err)
	}
	log.Printf("model created in %s", time.Since(started).Round(time.Millisecond))
	// Everything below needs the Registry that Create made (it replaces simulator.Map).
	installFixes()
	lab := newLab(m, o)
	if err := lab.installHooks(); err != nil {
		log.Fatalf("install hooks: %v", err)
	}
	if o.scenario != "" {
		if err := lab.applyScenarioFile(o.scenario); err != nil {
			m.Remove()
			log.Fatalf("scenario %s: %v", o.scenario, err)
		}
	}
	// The delay starts only now so that building the scenario is not slowed down;
	// the library reads it through a pointer to m.DelayConfig.
	m.DelayConfig.Delay = o.delayMS

	srv, err := lab.serve()
	if err != nil {
		m.Remove()
		log.Fatalf("serve: %v", err)
	}
	var controlSrv *http.Server
	var controlURL string
	if o.control != "" {
		controlSrv, controlURL, err = lab.serveControl(o.control)
		if err != nil {
			srv.Close()
			m.Remove()
			log.Fatalf("control API: %v", err)
		}
	}
	log.Printf("inventory ready in %s", time.Since(started).Round(time.Millisecond))

	// The ready lines: callers wait for GOVC_URL, so CONTROL is printed first.
	if controlURL != "" {
		fmt.Printf("CONTROL=%s\n", controlURL)
	}
	fmt.Printf("export GOVC_URL=%s GOVC_INSECURE=1\n", srv.URL)
	_ = os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig

	// Release requests held by a "hang" outage, or Close would wait for them forever.
	lab.gate.set(outageNone)
	if controlSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = controlSrv.Shutdown(ctx)
		cancel()
	}
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		log.Printf("gave up waiting for open SOAP requests")
	}
	m.Remove() // deletes the datastores' temporary directories
}

// serve starts the SOAP server (with TLS unless -notls) and puts the gate
// (outage, call counts, methods the library lacks) in front of its handler.
func (l *lab) serve() (*simulator.Server, error) {
	o := l.opts
	m := l.model
	m.Service.Listen = &url.URL{Host: o.listen, User: url.UserPassword(o.username, o.password)}
	m.Service.RegisterEndpoints = true
	if !o.noTLS {
		cfg := new(tls.Config)
		if o.certFile != "" || o.keyFile != "" {
			cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
			if err != nil {
				return nil, fmt.Errorf("-cert/-key: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		m.Service.TLS = cfg
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return nil, fmt.Errorf("-l %q: %w", o.listen, err)
	}
	srv := m.Service.NewServer() // panics when it cannot listen; that is fatal anyway
	// NewServer has started serving, but http.Server reads Handler per request and
	// nobody knows our address before the ready line, so swapping it here is safe.
	l.library = srv.Config.Handler
	l.gate.extra = l.soapExtra
	srv.Config.Handler = l.gate.wrap(l.library)
	return srv, nil
}

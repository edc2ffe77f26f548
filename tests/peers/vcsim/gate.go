package main

// The gate sits in front of the library's HTTP handler: it simulates vCenter
// outages, counts SOAP methods (tests assert "one property sweep, no per-object
// reads"), and answers SOAP methods the library does not implement.

import (
	"bytes"
	"encoding/xml"
	"io"
	"net/http"
	"strings"
	"sync"
)

const (
	outageNone   = "none"
	outageRefuse = "refuse" // the connection is closed without a response
	outageHang   = "hang"   // requests block until the outage ends or the client gives up
)

type gate struct {
	mu      sync.Mutex
	mode    string
	release chan struct{} // closed when a hang ends
	calls   map[string]int

	// extra answers SOAP methods the library lacks (handled=true) or rewrites the
	// request body the library then gets.
	extra func(method string, body []byte, w http.ResponseWriter, r *http.Request) (handled bool, rewritten []byte)
}

func newGate() *gate {
	return &gate{mode: outageNone, release: make(chan struct{}), calls: map[string]int{}}
}

func validOutage(mode string) bool {
	return mode == outageNone || mode == outageRefuse || mode == outageHang
}

func (g *gate) set(mode string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mode == outageHang && mode != outageHang {
		close(g.release)
		g.release = make(chan struct{})
	}
	g.mode = mode
}

func (g *gate) state() (string, chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mode, g.release
}

func (g *gate) count(method string) {
	g.mu.Lock()
	g.calls[method]++
	g.mu.Unlock()
}

func (g *gate) counts() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]int, len(g.calls))
	for k, v := range g.calls {
		out[k] = v
	}
	return out
}

func (g *gate) resetCounts() {
	g.mu.Lock()
	g.calls = map[string]int{}
	g.mu.Unlock()
}

// soapMethod is the local name of the first element inside the SOAP Body.
func soapMethod(body []byte) string {
	dec := xml.NewDecoder(bytes.NewReader(body))
	inBody := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		if start, ok := tok.(xml.StartElement); ok {
			if inBody {
				return start.Name.Local
			}
			inBody = start.Name.Local == "Body"
		}
	}
}

func (g *gate) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.admit(w, r) {
			return
		}
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/sdk") {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		method := soapMethod(body)
		if method != "" {
			g.count(method)
		}
		if g.extra != nil {
			handled, rewritten := g.extra(method, body, w, r)
			if handled {
				return
			}
			body = rewritten
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// admit applies the outage mode; false means the request was dropped.
func (g *gate) admit(w http.ResponseWriter, r *http.Request) bool {
	for {
		mode, release := g.state()
		switch mode {
		case outageRefuse:
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return false
				}
			}
			panic(http.ErrAbortHandler) // closes the connection without a response
		case outageHang:
			select {
			case <-release:
				continue // the outage changed: apply the new mode
			case <-r.Context().Done():
				return false // the client gave up
			}
		default:
			return true
		}
	}
}

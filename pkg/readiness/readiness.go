// Package readiness tracks whether each component of a process is ready and
// serves /healthz (the process is alive) and /readyz (every component is
// ready, with a per-component report).
package readiness

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
)

// Registry holds the readiness of named components.
type Registry struct {
	mu    sync.RWMutex
	state map[string]bool
}

// New returns an empty registry.
func New() *Registry { return &Registry{state: map[string]bool{}} }

// Add registers a component as not ready.
func (r *Registry) Add(name string) {
	r.mu.Lock()
	r.state[name] = false
	r.mu.Unlock()
}

// Set marks a component ready or not.
func (r *Registry) Set(name string, ready bool) {
	r.mu.Lock()
	r.state[name] = ready
	r.mu.Unlock()
}

// Ready reports whether every registered component is ready.
func (r *Registry) Ready() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, ok := range r.state {
		if !ok {
			return false
		}
	}
	return len(r.state) > 0
}

// Report is the /readyz body.
type Report struct {
	Ready      bool            `json:"ready"`
	Components []ComponentInfo `json:"components"`
}

// ComponentInfo is one component's readiness.
type ComponentInfo struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
}

// Report lists the components by name.
func (r *Registry) Report() Report {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rep := Report{Ready: len(r.state) > 0}
	for name, ok := range r.state {
		rep.Components = append(rep.Components, ComponentInfo{Name: name, Ready: ok})
		rep.Ready = rep.Ready && ok
	}
	slices.SortFunc(rep.Components, func(a, b ComponentInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return rep
}

// Register adds /healthz and /readyz to mux.
func (r *Registry) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		rep := r.Report()
		w.Header().Set("Content-Type", "application/json")
		if !rep.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rep)
	})
}

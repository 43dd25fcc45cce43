package bgtaskhttp

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/bgtask-go/bgtask"
)

// Option configures the handler made by [New].
type Option struct {
	apply func(*handler)
}

// AllowCancel lets the page and POST /api/instances/{id}/cancel cancel instances, with
// [bgtask.Abort]. Cross-site requests are refused all the same. Default: cancel answers
// 403 and the page shows no cancel button.
func AllowCancel() Option {
	return Option{apply: func(h *handler) { h.allowCancel = true }}
}

// handler serves one host's state; see the package doc for its routes.
type handler struct {
	host        *bgtask.Host
	allowCancel bool
	servers     servers
	mux         *http.ServeMux
}

// New returns a handler that serves h's page, state and events (see the package doc). It
// costs h nothing until it serves a request, and any number may serve one host. The
// handler is safe for concurrent use.
func New(h *bgtask.Host, opts ...Option) http.Handler {
	hd := &handler{host: h}
	for _, o := range opts {
		if o.apply != nil {
			o.apply(hd)
		}
	}
	hd.mux = http.NewServeMux()
	hd.mux.HandleFunc("GET /{$}", hd.servePage)
	hd.mux.HandleFunc("GET /api/state", hd.serveState)
	hd.mux.HandleFunc("GET /api/events", hd.serveEvents)
	hd.mux.Handle("POST /api/instances/{id}/cancel",
		http.NewCrossOriginProtection().Handler(http.HandlerFunc(hd.serveCancel)))
	return hd
}

// ServeHTTP routes r; see the package doc for the routes. It first makes sure that the
// streams of r's server are told when its Shutdown begins (see servers), so that a stream
// that starts once it began, after the page's request, is told too.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.servers.shutdown(r)
	h.mux.ServeHTTP(w, r)
}

// serveState answers GET /api/state.
func (h *handler) serveState(w http.ResponseWriter, r *http.Request) {
	st := h.snapshot()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(st) // an error means the client went away: nothing to do
}

// serveCancel answers POST /api/instances/{id}/cancel, once CrossOriginProtection has
// let it through. A second cancel of an instance that is canceling answers 204 as the
// first did, so that a double click is not an error; a terminated one has ended.
func (h *handler) serveCancel(w http.ResponseWriter, r *http.Request) {
	if !h.allowCancel {
		http.Error(w, "canceling is not allowed (see bgtaskhttp.AllowCancel)", http.StatusForbidden)
		return
	}
	in, ok := h.findInstance(r.PathValue("id"))
	if ok && (h.host.CancelInstance(in.InstanceID, bgtask.Abort) || in.State == bgtask.InstanceCanceling) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Error(w, "no such instance running", http.StatusNotFound)
}

// findInstance returns the listed instance whose id is id, as text. Going through the
// snapshot keeps the package on the standard library (no UUID parser) and tells a
// canceling instance from one that ended.
func (h *handler) findInstance(id string) (bgtask.InstanceInfo, bool) {
	id = strings.ToLower(id)
	for _, in := range h.host.Instances() {
		if in.InstanceID.String() == id && in.State != bgtask.InstanceTerminated {
			return in, true
		}
	}
	return bgtask.InstanceInfo{}, false
}

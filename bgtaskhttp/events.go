package bgtaskhttp

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/bgtask-go/bgtask"
)

const (
	// minInterval is the least time between two messages of a stream: at most 4 a second.
	minInterval = time.Second / 4
	// writeTimeout is how long a message may take to write before the stream gives up on
	// its client.
	writeTimeout = 10 * time.Second
)

// serveEvents answers GET /api/events: it sends the state at once, then, every
// minInterval, the state again if it may have changed and differs from the last sent,
// until the stream ends (see the package doc). It runs on the request's goroutine and
// returns when the stream ends.
func (h *handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	if err := rc.Flush(); errors.Is(err, http.ErrNotSupported) {
		http.Error(w, "this server cannot stream", http.StatusInternalServerError)
		return
	}
	if r.Method == http.MethodHead {
		return
	}
	// A write deadline of ours must not outlive the stream, on a connection that serves
	// more requests.
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	registered := make(chan struct{}, 1)
	stop := h.host.Subscribe(func(bgtask.Event) { signal(registered) },
		bgtask.EventRegistered, bgtask.EventUpdated, bgtask.EventUnregistered)
	defer stop()
	s := stream{w: w, rc: rc, ctx: r.Context(), shutdown: h.servers.shutdown(r), registered: registered}
	s.run(h)
}

// signal wakes the stream that waits on c; a wake already pending stands for this one.
// It never blocks: it is called by the host's event stream.
func signal(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// stream is one GET /api/events under way.
type stream struct {
	w          http.ResponseWriter
	rc         *http.ResponseController
	ctx        context.Context // the request's: done when the client goes away
	shutdown   <-chan struct{} // closed when the server shuts down; nil when unknown
	registered chan struct{}   // a registration was made, changed or removed since the last look
	last       []byte          // the state sent last
}

// run sends the state until the stream ends. Reading the state is costly with many
// registrations, so it reads it only when it may have changed: while instances run, as
// their progress and deferrals raise no event; after a registration was made, changed or
// removed; after an instance started or completed. The last two are told by counters
// rather than by a subscription to every launch and completion, which would cost each
// instance of the host a delivery to this stream.
func (s *stream) run(h *handler) {
	tick := time.NewTicker(minInterval)
	defer tick.Stop()
	busy := true // look at once
	var completed uint64
	for {
		n := h.completed() // before the read: a completion meanwhile is seen next time
		if busy || s.takeRegistered() || n != completed || len(h.host.Instances()) > 0 {
			completed = n
			var body []byte
			var err error
			if body, busy, err = h.stateJSON(); err != nil {
				return
			}
			if !bytes.Equal(body, s.last) {
				if s.send(body) != nil {
					return
				}
				s.last = body
			}
		}
		if !s.wait(tick.C) {
			return
		}
	}
}

// takeRegistered consumes a pending wake-up from a registration and reports whether
// there was one.
func (s *stream) takeRegistered() bool {
	select {
	case <-s.registered:
		return true
	default:
		return false
	}
}

// wait waits for c and reports whether the stream goes on.
func (s *stream) wait(c <-chan time.Time) bool {
	select {
	case <-c:
		return true
	case <-s.ctx.Done():
	case <-s.shutdown:
	}
	return false
}

// send writes one message; an error means the client is gone or does not read.
func (s *stream) send(body []byte) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(writeTimeout))                 // ErrNotSupported: no deadline to keep
	for _, part := range [][]byte{[]byte("data: "), body, []byte("\n\n")} { // the body has no newline
		if _, err := s.w.Write(part); err != nil {
			return err
		}
	}
	return s.rc.Flush()
}

// servers tells the streams when the http.Server that serves them begins its Shutdown,
// which does not end a request under way by itself: it waits for it. It keeps one channel
// per server, closed by a func that the server's Shutdown calls (see
// http.Server.RegisterOnShutdown), and kept closed, so that a stream that starts after
// that ends at once. A func registered once the Shutdown began is never called, so the
// handler registers it at the first request of each server, whatever its route (see
// handler.ServeHTTP). The servers are held weakly, and their entries dropped once they are
// collected: a program that makes many servers does not keep them. Its zero value is ready
// to use.
type servers struct {
	mu   sync.Mutex
	done map[weak.Pointer[http.Server]]chan struct{}
}

// shutdown returns a channel that is closed when the server of r begins its Shutdown, or
// nil when r does not say which server serves it.
func (s *servers) shutdown(r *http.Request) <-chan struct{} {
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if srv == nil {
		return nil
	}
	key := weak.Make(srv)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.done[key]; ok {
		return c
	}
	if s.done == nil {
		s.done = make(map[weak.Pointer[http.Server]]chan struct{})
	}
	c := make(chan struct{})
	s.done[key] = c
	var once sync.Once // each call of Shutdown calls the func again
	srv.RegisterOnShutdown(func() { once.Do(func() { close(c) }) })
	runtime.AddCleanup(srv, s.forget, key)
	return c
}

// forget drops the entry of a server that was collected.
func (s *servers) forget(key weak.Pointer[http.Server]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.done, key)
}

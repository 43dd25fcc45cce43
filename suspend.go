package bgtask

import (
	"sync/atomic"
	"time"
)

// pauseState says who suspended the host: the program, memory pressure, or both.
type pauseState struct {
	by    uint8                         // pauseProgram | pauseMemory; guarded by the host's lock
	ch    atomic.Pointer[chan struct{}] // non-nil while suspended; closed by the resume
	since time.Time                     // when the suspension began
}

const (
	pauseProgram uint8 = 1 << iota // Host.Suspend
	pauseMemory                    // memory pressure
)

// Suspend suspends the host: running instances block in Checkpoint (until Resume or
// their cancellation) and their SuspendedCount grows by one; new Requests answer
// DisabledByPolicy; time, system and custom fires are held, at most one per registration,
// until Resume; idle detection pauses. The execution-time limit keeps counting. Suspend
// does not wait for instances to reach a Checkpoint. Suspend while suspended, or after
// Shutdown, does nothing.
func (h *Host) Suspend() { h.suspend(pauseProgram) }

// Resume ends a suspension begun by Suspend: instances blocked in Checkpoint go on and the
// held fires start (each registration once, with its latest details). The host stays
// suspended while memory pressure lasts (see [Policy].MemoryLimitFraction). Resume does
// not wait for the instances it lets go on or starts. Resume without Suspend does nothing.
func (h *Host) Resume() { h.resume(pauseProgram) }

func (h *Host) suspend(by uint8) {
	h.lock()
	defer h.unlock()
	p := &h.pause
	if h.closed || p.by&by != 0 {
		return
	}
	p.by |= by
	if p.by != by {
		return // already suspended for the other reason
	}
	ch := make(chan struct{})
	p.ch.Store(&ch)
	p.since = time.Now()
	for i := h.running.head; i != nil; i = i.next {
		i.suspended.Add(1)
	}
}

func (h *Host) resume(by uint8) {
	h.lock()
	p := &h.pause
	if p.by&by == 0 {
		h.unlock()
		return
	}
	p.by &^= by
	if p.by != 0 {
		h.unlock()
		return
	}
	close(*p.ch.Swap(nil))
	paused := time.Since(p.since)
	var running []*instance
	if h.policy.IdleTimeout > 0 {
		running = h.running.slice(h.live)
	}
	h.dispatchLocked()
	h.unlock()
	for _, i := range running {
		i.resumeIdle(paused)
	}
}

func (h *Host) suspendedLocked() bool { return h.pause.by != 0 }

// waitResumed blocks while the host is suspended, until it resumes or i is canceled.
func (h *Host) waitResumed(i *instance) {
	ch := h.pause.ch.Load()
	if ch == nil {
		return
	}
	select {
	case <-*ch:
	case <-i.ctx.Done():
	}
}

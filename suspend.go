package bgtask

import (
	"cmp"
	"context"
	"slices"
	"sync/atomic"
	"time"
)

// pauseState says who suspended the host: the program, memory pressure, or both.
type pauseState struct {
	by    uint8                         // pauseProgram | pauseMemory; guarded by the host's lock
	ch    atomic.Pointer[chan struct{}] // non-nil while suspended; closed by the resume
	since int64                         // when the suspension began, on the host's clock
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
func (h *Host) Suspend() { h.suspend(pauseProgram, 0, 0) }

// Resume ends a suspension begun by Suspend: instances blocked in Checkpoint go on and the
// held fires start (each registration once, with its latest details, in the order they
// were held). The host stays suspended while memory pressure lasts (see
// [Policy].MemoryLimitFraction). Resume does not wait for the instances it lets go on or
// starts. Resume without Suspend does nothing.
func (h *Host) Resume() { h.resume(pauseProgram, 0, 0) }

// suspend suspends the host for by and reports whether it was not suspended for by. heap
// and limit are the memory reading, for pauseMemory.
func (h *Host) suspend(by uint8, heap, limit uint64) bool {
	h.lock()
	defer h.unlock()
	p := &h.pause
	if h.closed || p.by&by != 0 {
		return false
	}
	p.by |= by
	h.emitLocked(Event{Kind: EventSuspended, ByMemory: by == pauseMemory, Heap: heap, Limit: limit})
	if p.by != by {
		return true // already suspended for the other reason
	}
	ch := make(chan struct{})
	p.ch.Store(&ch)
	p.since = h.now()
	for i := h.insts.head; i != nil; i = i.next {
		if i.refs.Load() > 0 {
			i.suspended.Add(1)
		}
	}
	return true
}

// resume ends the suspension for by and reports whether the host was suspended for by.
// heap and limit are the memory reading, for pauseMemory.
func (h *Host) resume(by uint8, heap, limit uint64) bool {
	h.lock()
	p := &h.pause
	if p.by&by == 0 {
		h.unlock()
		return false
	}
	h.emitLocked(Event{Kind: EventResumed, ByMemory: by == pauseMemory, Heap: heap, Limit: limit})
	if p.by &^= by; p.by != 0 {
		h.unlock()
		return true
	}
	since := h.releasePauseLocked()
	var idle []*instance
	if h.policy.IdleTimeout > 0 {
		for i := h.insts.head; i != nil; i = i.next {
			idle = append(idle, i)
		}
	}
	held := make([]*Registration, 0, len(h.held))
	for r := range h.held {
		held = append(held, r)
	}
	slices.SortFunc(held, func(a, b *Registration) int { return cmp.Compare(h.held[a], h.held[b]) })
	for _, r := range held {
		h.tryStartLocked(r)
	}
	h.unlock()
	for _, i := range idle {
		i.resumeIdle(since, h.now())
	}
	return true
}

// releasePauseLocked lets go of the instances blocked in Checkpoint and returns when the
// suspension began.
func (h *Host) releasePauseLocked() (since int64) {
	if ch := h.pause.ch.Swap(nil); ch != nil {
		close(*ch)
	}
	return h.pause.since
}

func (h *Host) suspendedLocked() bool { return h.pause.by != 0 }

// waitResumed blocks while the host is suspended, until it resumes or ctx is done.
func (h *Host) waitResumed(ctx context.Context) {
	ch := h.pause.ch.Load()
	if ch == nil {
		return
	}
	select {
	case <-*ch:
	case <-ctx.Done():
	}
}

// Idle detection: SetProgress and Checkpoint store the time of the call (touch); one
// runtime timer per instance checks it when IdleTimeout could have passed and sets itself
// again for the rest when the instance was active meanwhile. Nothing runs per call but
// the store, and nothing at all when IdleTimeout is 0.

func (h *Host) startIdleTimer(i *instance) {
	if d := h.policy.IdleTimeout; d > 0 {
		i.mu.Lock()
		defer i.mu.Unlock()
		if i.refs.Load() > 0 {
			i.idle = time.AfterFunc(d, i.checkIdle)
			i.timers = append(i.timers, i.idle)
		}
	}
}

func (h *Host) touch(i *instance) {
	if h.policy.IdleTimeout > 0 {
		i.active.Store(h.now())
	}
}

// checkIdle cancels the instance with IdleTask if it has been idle for IdleTimeout, or
// sets the timer for the rest. While the host is suspended it does nothing: Resume calls
// resumeIdle.
func (i *instance) checkIdle() {
	h := i.reg.host
	if h.pause.ch.Load() != nil {
		return
	}
	idle := time.Duration(h.now() - i.active.Load())
	if idle >= h.policy.IdleTimeout {
		i.cancel(IdleTask)
		return
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	// idle is nil while the instance is started but not yet launched: launch sets it.
	if i.refs.Load() > 0 && i.idle != nil {
		i.idle.Reset(h.policy.IdleTimeout - idle)
	}
}

// resumeIdle takes the suspension from since to until out of the instance's idle time,
// and checks again: activity before the suspension moves forward by its length, and
// activity during it counts as at its end.
func (i *instance) resumeIdle(since, until int64) {
	for {
		old := i.active.Load()
		moved := max(old, until) // active during the suspension, or after it
		if old < since {
			moved = old + (until - since)
		}
		if moved == old || i.active.CompareAndSwap(old, moved) {
			break
		}
	}
	i.checkIdle()
}

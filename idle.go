package bgtask

import "time"

// Idle detection: SetProgress and Checkpoint store the time of the call (touch); one
// runtime timer per instance checks it when IdleTimeout could have passed and sets itself
// again for the rest when the instance was active meanwhile. Nothing runs per call but
// the store, and nothing at all when IdleTimeout is 0.

// now is the host's monotonic clock, in nanoseconds since NewHost.
func (h *Host) now() int64 { return int64(time.Since(h.epoch)) }

func (h *Host) startIdleTimer(i *instance) {
	d := h.policy.IdleTimeout
	if d == 0 {
		return
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.finished.Load() {
		i.idle = time.AfterFunc(d, i.checkIdle)
		i.timers = append(i.timers, i.idle)
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
	if !i.finished.Load() && i.idle != nil {
		i.idle.Reset(h.policy.IdleTimeout - idle)
	}
}

// resumeIdle moves the last activity forward by the time the host was suspended, so that
// the suspension does not count as idleness, and checks again.
func (i *instance) resumeIdle(paused time.Duration) {
	if i.reg.host.policy.IdleTimeout == 0 {
		return
	}
	i.active.Add(int64(paused))
	i.checkIdle()
}

package bgtask

import (
	"time"
)

// Admission and dispatch: a fire comes in (fire), starts an instance at once or is held
// until what holds it lets go (tryStartLocked), the instance is launched on its own
// goroutine (launch), and when it ends it is retired (retire), which starts what waited
// for it. A held fire waits for exactly one thing, and is looked at again only when that
// thing changes:
//
//   - the registration's running instance: retire of that instance;
//   - the host's suspension: Resume;
//   - a condition that does not hold: conditionChanged of that registration;
//   - a MaxConcurrent slot: Host.slots, a queue taken from, oldest first, by retire.
//
// So no event walks every held fire. Every accepted fire ends in exactly one Completed
// event: it starts an instance, or it is dropped by Unregister or Shutdown, which raise a
// Completed event for it (drop).

// lock takes the host's lock.
func (h *Host) lock() { h.mu.Lock() }

// unlock releases the host's lock, then launches the instances started under it and raises
// the Completed events of the fires dropped under it: both would hold the lock too long,
// or call user code.
func (h *Host) unlock() {
	launch, drops := h.toLaunch, h.toDrop
	h.toLaunch, h.toDrop = nil, nil
	h.mu.Unlock()
	for _, i := range launch {
		h.launch(i)
	}
	for _, i := range drops {
		h.raiseDropped(i)
	}
}

// fire starts r's task with details, or holds the fire until it can start. explicit is
// for Request, which is refused rather than held while the registration runs or the host
// is suspended. waiter, if not nil, receives the outcome of the fire.
func (h *Host) fire(r *Registration, details any, explicit bool, waiter chan<- CompletedEventArgs) ApplicationTriggerResult {
	h.lock()
	defer h.unlock()
	return h.fireLocked(r, details, explicit, waiter)
}

// fireLocked is fire with the lock held; an instance it starts is launched by unlock.
func (h *Host) fireLocked(r *Registration, details any, explicit bool, waiter chan<- CompletedEventArgs) ApplicationTriggerResult {
	switch {
	case h.closed || r.unregistered:
		return DisabledByPolicy
	case explicit && h.suspendedLocked():
		return DisabledByPolicy
	case explicit && r.running != nil:
		return CurrentlyRunning
	}
	r.pending = details
	if waiter != nil {
		r.waiters = append(r.waiters, waiter)
	}
	if r.held {
		return Allowed // coalesced with the fire already held
	}
	r.held = true
	h.seq++
	h.held[r] = h.seq
	h.tryStartLocked(r)
	return Allowed
}

// tryStartLocked starts r's held fire if nothing holds it. Otherwise it leaves it to what
// holds it (see the top of this file).
func (h *Host) tryStartLocked(r *Registration) {
	switch {
	case !r.held || r.running != nil || h.suspendedLocked() || !r.conditionsHoldLocked():
	case h.policy.MaxConcurrent > 0 && h.live.n >= h.policy.MaxConcurrent:
		if !r.waitingSlot {
			r.waitingSlot = true
			h.slots = append(h.slots, r)
		}
	default:
		h.startLocked(r)
	}
}

// startLocked creates r's instance for its held fire; unlock launches it.
func (h *Host) startLocked(r *Registration) {
	details := r.pending
	if r.sched.period > 0 {
		details = r.catchUpLocked(details)
	}
	i := newInstance(r, details, h.ids.newID())
	if h.policy.IdleTimeout > 0 {
		i.active.Store(h.now()) // set before anyone can check it, at start
	}
	h.seq++
	i.seq = h.seq
	i.waiters = r.waiters
	r.pending, r.waiters, r.held = nil, nil, false
	delete(h.held, r)
	r.running = i
	h.insts[i.id] = i
	h.live.add(1)
	h.toLaunch = append(h.toLaunch, i)
	if r.oneShot {
		h.unregisterLocked(r, Abort)
	}
}

// startSlotsLocked starts the fires that waited for a MaxConcurrent slot, oldest first, as
// long as slots are free.
func (h *Host) startSlotsLocked() {
	for len(h.slots) > 0 && (h.policy.MaxConcurrent == 0 || h.live.n < h.policy.MaxConcurrent) {
		r := h.slots[0]
		h.slots[0] = nil
		h.slots = h.slots[1:]
		r.waitingSlot = false
		h.tryStartLocked(r)
	}
}

// launch starts the instance's timers and goroutine.
func (h *Host) launch(i *instance) {
	if d := i.reg.maxExecution(); d > 0 {
		i.addTimer(d, func() { i.cancel(ExecutionTimeExceeded) })
	}
	h.startIdleTimer(i)
	go i.run()
}

// retire is called once per instance, when it ended. It frees the registration and the
// instance's MaxConcurrent slot and starts what waited for them, then queues the Completed
// event: a handler that fires the registration again finds it free. The delivery is
// counted (i.job) before the instance stops counting as live, so that Shutdown, which
// waits for the one and then the other, never misses it. When a delivery goroutine must be
// started and inline is set, retire reports that the caller, a goroutine of the library,
// delivers instead (deliverHere).
func (h *Host) retire(i *instance, inline bool) (deliverHere bool) {
	r := i.reg
	events := r.progress.watched() || r.completed.watched()
	if events {
		h.lib.begin(&i.job)
	}
	h.lock()
	if r.running == i {
		r.running = nil
	}
	h.live.add(-1)
	terminated := i.refs.Load() < 0
	if !terminated || i.goroutines.Load() == 0 {
		delete(h.insts, i.id)
	}
	if terminated && h.closed {
		h.lost = append(h.lost, i.info())
	}
	waiters := i.waiters
	i.waiters = nil
	h.tryStartLocked(r)
	h.startSlotsLocked()
	h.rescheduleLocked(r)
	h.unlock()
	notify(waiters, *i.result.Load())
	switch {
	case !events:
		return false
	case !r.events.add(i):
		h.lib.end(&i.job) // the goroutine draining the queue delivers it
		return false
	case inline:
		return true
	}
	h.lib.goBegun(&i.job, func(j *job) { r.drain(j, nil) })
	return false
}

// forgetTerminated is called when the last goroutine of a terminated instance returns: it
// is no longer listed.
func (h *Host) forgetTerminated(i *instance) {
	h.lock()
	delete(h.insts, i.id)
	h.unlock()
}

// unregisterLocked removes r from the host, dropping its held fire with reason.
func (h *Host) unregisterLocked(r *Registration, reason CancellationReason) {
	if r.unregistered {
		return
	}
	r.unregistered = true
	h.dropLocked(r, reason)
	delete(h.regs, r.id)
	if !h.closed { // else closeLocked detached it
		r.trigger.detach(r)
	}
	h.quietLocked(r)
}

// dropLocked drops r's held fire, if any: unlock raises its Completed event, as canceled
// with reason, with a new InstanceID and no Started time.
func (h *Host) dropLocked(r *Registration, reason CancellationReason) {
	if !r.held {
		return
	}
	i := &instance{id: h.ids.newID(), reg: r, details: r.pending, waiters: r.waiters}
	i.job.reg = r
	ce := &CanceledError{Reason: reason}
	i.canceled.Store(ce)
	i.result.Store(&CompletedEventArgs{InstanceID: i.id, Err: ce, Canceled: true, Reason: reason, Finished: time.Now()})
	r.pending, r.waiters, r.held = nil, nil, false
	delete(h.held, r)
	h.toDrop = append(h.toDrop, i)
}

// raiseDropped raises the Completed event of a dropped fire and tells its waiters.
func (h *Host) raiseDropped(i *instance) {
	notify(i.waiters, *i.result.Load())
	r := i.reg
	if (r.progress.watched() || r.completed.watched()) && r.events.add(i) {
		h.lib.Go(r, func(j *job) { r.drain(j, nil) })
	}
}

// notify sends res to each waiter; each has room for it.
func notify(waiters []chan<- CompletedEventArgs, res CompletedEventArgs) {
	for _, w := range waiters {
		w <- res
	}
}

package bgtask

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
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

// unlock releases the host's lock, then does what was left for after it (see unlockFor).
func (h *Host) unlock() { h.unlockFor(nil) }

// unlockFor releases the host's lock, then logs the events sent under it, launches the
// instances started under it, and tells the waiters of the instances retired and the fires
// dropped under it and queues their events for their handlers: all of that would hold the
// lock too long, or calls user code. (Their EventCompleted was sent under the lock.) If
// instances ended meanwhile (see retire) and the lock is free, it takes it again to retire
// them. It reports whether the caller is to deliver own's events itself.
func (h *Host) unlockFor(own *instance) (deliverOwn bool) {
	for {
		launch, retired, events := h.toLaunch, h.retired, h.events
		h.toLaunch, h.retired, h.events = nil, nil, nil
		h.mu.Unlock()
		if events != nil {
			h.logAll(events)
			h.lib.release() // see emitLocked
		}
		for _, i := range launch {
			h.launch(i)
		}
		for _, i := range retired {
			if h.raiseRetired(i, i == own) {
				deliverOwn = true
			}
		}
		if !h.ending.pending() || h.ending.waiting.Load() || !h.mu.TryLock() {
			return deliverOwn // nothing to retire, the scheduler will, or the holder of the lock
		}
		h.retireLocked()
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
	r.held, r.heldBy = true, 0
	if h.tryStartLocked(r); r.held {
		h.seq++
		h.held[r] = h.seq // for Resume and Shutdown
	}
	return Allowed
}

// tryStartLocked starts r's held fire if nothing holds it. Otherwise it leaves it to what
// holds it (see the top of this file).
func (h *Host) tryStartLocked(r *Registration) {
	switch {
	case !r.held:
	case r.running != nil:
		h.heldLocked(r, HeldByRunning)
	case h.suspendedLocked():
		h.heldLocked(r, HeldBySuspension)
	case !r.conditionsHoldLocked():
		h.heldLocked(r, HeldByConditions)
	case h.policy.MaxConcurrent > 0 && h.live.n >= h.policy.MaxConcurrent:
		h.heldLocked(r, HeldByConcurrency)
		if !r.waitingSlot {
			r.waitingSlot = true
			h.slots = append(h.slots, r)
		}
	default:
		h.startLocked(r)
	}
}

// heldLocked records what holds r's fire, and reports it when that changed.
func (h *Host) heldLocked(r *Registration, by HeldBy) {
	if r.heldBy != by {
		r.heldBy = by
		if h.stream.wants(EventHeld) {
			h.emitLocked(Event{Kind: EventHeld, Task: r, Held: by})
		}
	}
}

// registeredLocked reports that r was registered.
func (h *Host) registeredLocked(r *Registration) {
	if h.stream.wants(EventRegistered) {
		h.emitLocked(Event{Kind: EventRegistered, Task: r})
	}
}

// startLocked creates r's instance for its held fire; unlock launches it.
func (h *Host) startLocked(r *Registration) {
	details := r.pending
	if r.sched.period > 0 {
		details = r.catchUpLocked(details)
	}
	i := h.newInstanceLocked(r, details, h.ids.newID())
	i.waiters = r.waiters
	r.pending, r.waiters, r.held = nil, nil, false
	delete(h.held, r)
	if r.oneShot {
		h.unregisterLocked(r, Abort)
		i.deleteFirst = r.persistent
	}
}

// deleteOneShot deletes the record of i's registration, a OneShot whose instance i starts,
// on i's goroutine before it calls Run, so that a crash while i runs does not run it again
// after a restart; then it starts i's timers, which do not count the write. A store that
// fails is logged, the delete retried, and Run called all the same.
func (h *Host) deleteOneShot(i *instance) {
	r := i.reg
	if err := h.saver.commit(context.Background(), nil, []uuid.UUID{r.id}); err != nil {
		h.emit(&Event{Kind: EventStoreError, Task: r, Err: err})
		h.saver.deleteLater(r.id)
	}
	h.touch(i)
	h.startTimers(i)
}

// newInstanceLocked creates an instance of r, as running; unlock launches it.
func (h *Host) newInstanceLocked(r *Registration, details any, id uuid.UUID) *instance {
	i := newInstance(r, details, id)
	i.task, i.limit = r.task, r.maxExecution()
	if h.policy.IdleTimeout > 0 {
		i.active.Store(h.now()) // set before anyone can check it, at start
	}
	r.running = i
	h.insts.push(i)
	h.live.add(1)
	h.toLaunch = append(h.toLaunch, i)
	if h.stream.wants(EventLaunched) {
		h.launchedLocked(i) // under the lock: before anyone can cancel it
	}
	return i
}

// launchedLocked sends i's EventLaunched; out of line, so that the Event stays out of the
// frames of the paths that start instances.
//
//go:noinline
func (h *Host) launchedLocked(i *instance) {
	h.emitLocked(Event{Kind: EventLaunched, Task: i.reg, InstanceID: i.id})
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

// launch starts the instance's timers and goroutine; a persistent OneShot's timers start
// once its record is deleted (see deleteOneShot).
func (h *Host) launch(i *instance) {
	if !i.deleteFirst {
		h.startTimers(i)
	}
	go i.run()
}

// startTimers starts the instance's time limit and its idle check.
func (h *Host) startTimers(i *instance) {
	if i.limit > 0 {
		i.addTimer(i.limit, func() { i.cancel(ExecutionTimeExceeded) })
	}
	h.startIdleTimer(i)
}

// Retirement: an instance that ended sends its EventCompleted, then frees its registration
// and its MaxConcurrent slot, which starts what waited for them (so the stream reports
// them in that order), and then tells its waiters and handlers, so that a handler that
// fires the registration again finds it free.
//
// An ending instance does not wait for the host's lock: it joins Host.ending and retires
// the list only if the lock is free; otherwise the holder of the lock retires it when it
// unlocks. Measured beside taking the lock for each instance: BenchmarkCancelFleet 2.3 µs
// per instance against 3.0 µs (the context baseline: 1.5 µs), and the p99 of
// BenchmarkTimeTriggersDueAtOneInstant 17.5–18.5 ms against 20.5–21.6 ms (runtime
// timers: 13 ms), before the waiting below.
//
// While the scheduler fires a burst of time fires, more than a batch due at once, the
// instances that end wait to be retired until it has fired the last batch (waiting): so the
// host's lock and CPU go to firing, and retiring the first instances does not delay the
// start of the last ones. The p99 of BenchmarkTimeTriggersDueAtOneInstant is 11.7–12.0 ms
// this way against 15.8–17.6 ms retiring at once (runtime timers: 12.1–12.2 ms); a
// retirement waits at most as long as the burst.

// endingList holds the instances that ended and wait to be retired. It has a lock of its
// own, a leaf that is held only to add to the list or to take it.
type endingList struct {
	mu      sync.Mutex
	list    []*instance
	n       atomic.Int32
	waiting atomic.Bool // the scheduler fires a burst, and retires the list after it
}

func (l *endingList) add(i *instance) {
	l.mu.Lock()
	l.list = append(l.list, i)
	l.n.Add(1)
	l.mu.Unlock()
}

func (l *endingList) pending() bool { return l.n.Load() > 0 }

// take returns the list and empties it.
func (l *endingList) take() []*instance {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := l.list
	l.list = nil
	l.n.Store(0)
	return list
}

// retire is called once per instance, when it ended. See above; it reports whether the
// caller, a goroutine of the library if inline, delivers the instance's events itself
// (deliverHere) rather than a new goroutine.
func (h *Host) retire(i *instance, inline bool) (deliverHere bool) {
	h.ending.add(i)
	if h.ending.waiting.Load() || !h.mu.TryLock() {
		return false // the scheduler or the holder of the lock retires it, and starts the delivery
	}
	h.retireLocked()
	if !inline {
		return h.unlockFor(nil)
	}
	return h.unlockFor(i)
}

// retireLocked retires the instances that ended. The delivery of their events is counted
// (i.job) before they stop counting as live, so that Shutdown, which waits for the one and
// then the other, never misses it; unlock then raises the events.
func (h *Host) retireLocked() {
	ended := h.ending.take()
	for _, i := range ended {
		r := i.reg
		h.countEventsLocked(i)
		if r.running == i {
			r.running = nil
		}
		h.live.add(-1)
		terminated := i.refs.Load() < 0
		if !terminated || i.goroutines.Load() == 0 {
			h.insts.remove(i)
		}
		if terminated && h.closed {
			h.lost = append(h.lost, i)
		}
		h.setLastLocked(r, i.result.Load())
		h.retired = append(h.retired, i)
	}
	// The fires that waited for a slot go first: a registration whose instance just ended
	// queues its next fire behind them, or it could keep the slots to itself.
	h.startSlotsLocked()
	for _, i := range ended {
		h.tryStartLocked(i.reg)
		h.rescheduleLocked(i.reg)
	}
}

// setLastLocked records res as r's last result, to be stored if r is persistent, and
// among the host's completions. The last result of a dispatched registration is not
// stored: its fires run in any process of the fleet, which share the store, and the
// dispatcher has the fleet's results (bgtaskriver: Fleet.LastResult). Writing each
// process's own result there also cost a store write per fire: BenchmarkFleetThroughput
// is 0.65–0.68× River's without it, against 0.56× with it in the same session.
func (h *Host) setLastLocked(r *Registration, res *CompletedEventArgs) {
	r.last = res
	h.completed.add(r, res)
	if r.persistent && !r.unregistered && !h.dispatched(r) {
		h.saver.markDirty(r)
	}
}

// countEventsLocked counts the delivery of i's events, if anyone watches (Shutdown waits for
// it from now on), and sends its EventCompleted, if anyone wants it. The event is sent
// here, under the host's lock, when the instance is retired or its fire dropped: before
// the events of what that lets start (the next instance's Launched), and after the
// instance's own (Canceled, Revoked, Terminated), which were sent before it ended.
func (h *Host) countEventsLocked(i *instance) {
	r := i.reg
	if i.events = r.progress.watched() || r.completed.watched(); i.events {
		h.lib.begin(&i.job)
	}
	if h.stream.mask.Load()&completedBits(i.result.Load()) != 0 {
		h.sendCompletedLocked(i)
	}
}

// raiseRetired tells the waiters of a retired instance or a dropped fire its outcome, after
// its EventCompleted (so that a program that waits and fires again sees the events in the
// order of its fires), and queues its events for the handlers. It reports whether the
// caller is to deliver them: own is set when the caller is a goroutine of the library that
// i ended on (its own, or its grace timer's), which then delivers rather than starting
// another.
func (h *Host) raiseRetired(i *instance, own bool) (deliverHere bool) {
	for _, w := range i.waiters {
		w <- *i.result.Load() // each has room for it
	}
	switch {
	case !i.events:
	case !i.reg.events.add(i):
		h.lib.end(&i.job) // the goroutine draining the queue delivers it
	case own:
		i.drainHere = true
		return true
	default:
		h.lib.goBegun(&i.job, func(j *job) { i.reg.drain(j, nil) })
	}
	return false
}

// forgetTerminated is called when the last goroutine of a terminated instance returns: it
// is no longer listed.
func (h *Host) forgetTerminated(i *instance) {
	h.lock()
	h.insts.remove(i)
	h.unlock()
}

// unregisterLocked removes r from the host, dropping its held fire with reason.
func (h *Host) unregisterLocked(r *Registration, reason CancellationReason) {
	if r.unregistered {
		return
	}
	r.unregistered = true
	if r.waitingSlot {
		r.waitingSlot = false
		h.slots = slices.DeleteFunc(h.slots, func(x *Registration) bool { return x == r })
	}
	h.dropLocked(r, reason)
	delete(h.regs, r.id)
	if h.stream.wants(EventUnregistered) {
		h.emitLocked(Event{Kind: EventUnregistered, Task: r})
	}
	if !h.closed { // else closeLocked detached it
		r.trigger.detach(r)
	}
	h.quietLocked(r)
}

// dropLocked drops r's held fire, if any: it sends its Completed event, as canceled with
// reason, with a new InstanceID and no Started time, and leaves its waiters and handlers
// to unlock, as retireLocked does for a retired instance.
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
	h.setLastLocked(r, i.result.Load())
	h.countEventsLocked(i)
	h.retired = append(h.retired, i)
}

// instList is the host's list of instances, oldest first: O(1) to add and remove, and in
// the order Instances reports.
type instList struct{ head, tail *instance }

func (l *instList) push(i *instance) {
	i.prev, i.next, i.listed = l.tail, nil, true
	if l.tail != nil {
		l.tail.next = i
	} else {
		l.head = i
	}
	l.tail = i
}

// remove takes i out of the list, if it is in it.
func (l *instList) remove(i *instance) {
	if !i.listed {
		return
	}
	if i.prev != nil {
		i.prev.next = i.next
	} else {
		l.head = i.next
	}
	if i.next != nil {
		i.next.prev = i.prev
	} else {
		l.tail = i.prev
	}
	i.prev, i.next, i.listed = nil, nil, false
}

package bgtask

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Shutdown stops every trigger, refuses new fires, drops the held ones (each raises its
// Completed event, canceled with [Terminating]), cancels running instances with
// Terminating and waits until each has finished or been terminated (after the grace
// period), and every Completed event has been delivered, or until ctx ends.
//
// It returns nil when everything finished cleanly and every goroutine the host started
// has returned. Otherwise it returns a [*ShutdownError] that names each instance
// terminated during the shutdown, each terminated earlier whose goroutines still run, and,
// when ctx ended first (the error then wraps ctx.Err()), each instance still running and
// each handler or Watch of the program still running. Calling Shutdown again is safe: it
// waits the same way and reports what is left then (a store write that failed is tried
// again). The registrations stay listed by AllTasks.
//
// Called from an event handler, a Canceled handler, a CustomTrigger's Watch or a condition's
// stop func (of this host or another), Shutdown cannot wait for its caller, nor for other
// callbacks that call Shutdown: it waits for everything else, and its error names the library
// goroutines still running among Stuck, its caller included. Called from a task's Run, it
// returns once that instance has been terminated (its Run has not returned), after the grace
// period.
func (h *Host) Shutdown(ctx context.Context) error {
	if ctx == nil {
		return invalidf("Shutdown", "nil context")
	}
	self := calledFromCallback()
	h.lock()
	if !h.closed {
		h.closed = true
		h.closeLocked()
	}
	h.unlock()
	for _, i := range h.running() {
		i.cancel(Terminating)
	}
	err := h.live.waitAtMost(ctx, h.lock, h.unlock, func() int { return 0 })
	if err == nil { // an Ensure's update under way leaves its registration to be written after it
		err = h.updates.waitAtMost(ctx, h.lock, h.unlock, func() int { return 0 })
	}
	var storeErr error
	if h.saver != nil {
		storeErr = h.saver.stop(ctx) // the results are all in: write them
	}
	if err == nil {
		err = h.lib.wait(ctx, self)
	}
	if err == nil && !self {
		// Every event is delivered: subscribers get no more. Events sent meanwhile (an
		// Unregister racing with this) may have started deliveries: wait for them too;
		// any that starts from now on delivers nothing.
		h.stream.closed.Store(true)
		err = h.lib.wait(ctx, self)
	}
	if storeErr != nil {
		storeErr = fmt.Errorf("bgtask: shutdown: writing the store: %w", storeErr)
	}
	return errors.Join(h.shutdownError(err, self), storeErr)
}

// closeLocked drops the held fires and stops the triggers' machinery. The triggers let go
// of the registrations, so that a trigger the program keeps does not keep the host.
func (h *Host) closeLocked() {
	h.stopSchedulerLocked()
	h.memory.stopLocked()
	h.pause.by = 0
	h.releasePauseLocked()
	h.slots = nil
	type watched struct {
		r  *Registration
		cs *condState
	}
	var conds []watched
	for _, r := range h.regs {
		h.dropLocked(r, Terminating)
		r.trigger.detach(r)
		if r.cond != nil && !r.quiet {
			conds = append(conds, watched{r, r.cond})
		}
		r.quiet = true // the conditions are stopped below, all on one goroutine
		if r.stopWatch != nil {
			r.stopWatch()
		}
	}
	if len(conds) > 0 {
		h.lib.Go(nil, func(j *job) {
			for _, w := range conds {
				w.r.unwatch(j, w.cs)
			}
		})
	}
}

// quietLocked stops what runs on r's behalf outside its instances: a custom trigger's
// Watch and the condition subscriptions. Both are user code, so they are stopped by
// canceling a context and on a goroutine of the library, not under the lock.
func (h *Host) quietLocked(r *Registration) {
	if r.quiet {
		return
	}
	r.quiet = true
	if r.stopWatch != nil {
		r.stopWatch()
	}
	if cs := r.cond; cs != nil {
		h.lib.Go(r, func(j *job) { r.unwatch(j, cs) })
	}
}

// shutdownError describes what Shutdown leaves behind, or returns nil when nothing is.
// self says that Shutdown was called from a callback, which it could not wait for.
func (h *Host) shutdownError(ctxErr error, self bool) error {
	h.lock()
	lost := slices.Clone(h.lost)
	h.unlock()
	var infos []InstanceInfo
	for _, i := range lost { // described as they are now: their goroutines may have returned
		infos = append(infos, i.info())
	}
	for _, i := range h.instances() {
		listed := slices.ContainsFunc(infos, func(in InstanceInfo) bool { return in.InstanceID == i.id })
		if in := i.info(); !listed && (in.State == InstanceTerminated || ctxErr != nil) {
			infos = append(infos, in)
		}
	}
	var stuck []string
	if ctxErr != nil || self {
		stuck = h.lib.stuck(self)
	}
	if len(infos) == 0 && len(stuck) == 0 && ctxErr == nil {
		return nil
	}
	slices.SortStableFunc(infos, func(a, b InstanceInfo) int { return a.Started.Compare(b.Started) })
	return &ShutdownError{Err: ctxErr, Instances: infos, Stuck: stuck}
}

package bgtask

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Shutdown stops every trigger, refuses new fires, cancels running instances with
// [Terminating] and waits until each has finished or been terminated (after the grace
// period), and every Completed event has been delivered, or until ctx ends.
//
// It returns nil when everything finished cleanly and every goroutine the host started
// has returned. Otherwise the error names each instance terminated during the shutdown,
// each terminated earlier whose goroutines still run, and, when ctx ended first (the error
// then wraps ctx.Err()), each instance still running, with its registration name,
// InstanceID and outstanding deferrals. Calling Shutdown again is safe: it waits the same
// way and reports the same instances. The registrations stay listed by AllTasks.
//
// Shutdown waits for event handlers: called from one, it can return only when ctx ends.
func (h *Host) Shutdown(ctx context.Context) error {
	h.lock()
	if !h.closed {
		h.closed = true
		h.closeLocked()
	}
	insts := h.running.slice(h.live)
	h.unlock()
	for _, i := range insts {
		i.cancel(Terminating)
	}
	err := h.waitLive(ctx)
	if err == nil {
		err = h.lib.wait(ctx)
	}
	return h.shutdownError(err)
}

// closeLocked drops the held fires and stops the triggers' machinery.
func (h *Host) closeLocked() {
	for _, r := range h.queue {
		r.held, r.pending = false, nil
	}
	h.queue = nil
	h.stopSchedulerLocked()
	h.memory.stopLocked()
	for _, r := range h.regs {
		h.quietLocked(r)
	}
}

// quietLocked stops what runs on r's behalf outside its instances: a custom trigger's
// Watch and the condition subscriptions. Both are user code, so they are stopped by
// cancelling a context and on a goroutine of the library, not under the lock.
func (h *Host) quietLocked(r *Registration) {
	if r.quiet {
		return
	}
	r.quiet = true
	if r.stopWatch != nil {
		r.stopWatch()
	}
	if r.cond != nil {
		h.lib.Go(r.unwatch)
	}
}

func (h *Host) waitLive(ctx context.Context) error {
	h.lock()
	if h.live == 0 {
		h.unlock()
		return nil
	}
	if h.liveZero == nil {
		h.liveZero = make(chan struct{})
	}
	zero := h.liveZero
	h.unlock()
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// shutdownError describes what Shutdown leaves behind, or returns nil when nothing is.
func (h *Host) shutdownError(ctxErr error) error {
	h.lock()
	defer h.unlock()
	lines := slices.Clone(h.lost)
	var errs []error
	if len(lines) > 0 {
		errs = append(errs, ErrTerminated)
	}
	for i := range h.zombies {
		lines = append(lines, fmt.Sprintf("%s: terminated, %d goroutine(s) still running", i.describe(), i.goroutines.Load()))
	}
	if ctxErr != nil {
		errs = append(errs, ctxErr)
		for _, i := range h.running.slice(h.live) {
			lines = append(lines, fmt.Sprintf("%s: abandoned, %s", i.describe(), i.outstanding()))
		}
	}
	if len(lines) == 0 && ctxErr == nil {
		return nil
	}
	slices.Sort(lines)
	return &shutdownError{lines: lines, errs: errs}
}

type shutdownError struct {
	lines []string
	errs  []error
}

func (e *shutdownError) Error() string {
	msg := "bgtask: shutdown incomplete"
	if len(e.errs) > 0 {
		msg += " (" + errors.Join(e.errs...).Error() + ")"
		msg = strings.ReplaceAll(msg, "\n", ", ")
	}
	return msg + ":\n\t" + strings.Join(e.lines, "\n\t")
}

func (e *shutdownError) Unwrap() []error { return e.errs }

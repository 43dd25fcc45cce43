package bgtask

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Host runs registered tasks: it owns their triggers, applies its [Policy], tracks every
// running instance and shuts down gracefully. A Host is safe for concurrent use; the zero
// value is not usable: hosts come from [NewHost]. A host starts no goroutine of its own
// until something needs one, and [Host.Shutdown] stops and joins all of them.
type Host struct {
	policy  Policy
	log     *slog.Logger
	entries map[string]BackgroundTask
	lib     tracker   // the library's goroutines: event delivery, handlers, the scheduler
	epoch   time.Time // for the monotonic clock of idle detection
	memory  memoryWatch

	mu       sync.Mutex // taken with lock and unlock: see lock.go
	retired  retireStack
	toLaunch []*instance // started under the lock, launched by unlock
	regs     map[uuid.UUID]*Registration
	closed   bool
	running  instList        // live instances, oldest first
	live     int             // len(running)
	liveZero chan struct{}   // closed when live drops to zero; made by Shutdown
	ids      idPool          // instance IDs
	queue    []*Registration // registrations with a held fire, oldest fire first
	zombies  map[*instance]struct{}
	lost     []string // instances terminated during Shutdown, described
	system   map[SystemTriggerType][]*Registration
	sched    *scheduler // time triggers; nil until the first is registered
	pause    pauseState

	// System conditions, under their own lock: Satisfied and Watch are called without
	// the host's lock (they are Condition methods, which may be user code).
	sysMu    sync.Mutex
	sysState map[SystemConditionType]bool
	sysWatch map[SystemConditionType]map[*func()]struct{}
}

// NewHost returns a host configured by opts, or the first option's error.
func NewHost(opts ...Option) (*Host, error) {
	h := &Host{
		log:     slog.Default(),
		entries: make(map[string]BackgroundTask),
		regs:    make(map[uuid.UUID]*Registration),
		zombies: make(map[*instance]struct{}),
		epoch:   time.Now(),
	}
	for _, o := range opts {
		if o.apply == nil {
			continue
		}
		if err := o.apply(h); err != nil {
			return nil, err
		}
	}
	h.startMemoryWatch()
	return h, nil
}

// Register validates b and registers it: from now on its trigger starts its task. The
// errors match [ErrNoTrigger], [ErrNoTask], [ErrUnknownEntryPoint],
// [ErrInvalidFreshness], [ErrHostClosed], or [ErrInvalidArgument] for an empty name, a
// negative MaxExecutionTime or a nil condition. Register does not start the task: the
// trigger does, when it fires.
func (h *Host) Register(b Builder) (*Registration, error) {
	task, err := h.check(b)
	if err != nil {
		return nil, err
	}
	r := &Registration{
		host:         h,
		id:           uuid.New(),
		name:         b.Name,
		trigger:      b.Trigger,
		task:         task,
		entryPoint:   b.TaskEntryPoint,
		conditions:   slices.Clone(b.Conditions),
		cancelOnLoss: b.CancelOnConditionLoss,
		maxExec:      b.MaxExecutionTime,
		oneShot:      b.Trigger.oneShot(),
	}
	h.watchConditions(r)
	h.lock()
	defer h.unlock()
	if h.closed {
		r.unregistered = true
		h.quietLocked(r)
		return nil, ErrHostClosed
	}
	h.regs[r.id] = r
	r.trigger.attach(r)
	return r, nil
}

// check validates b and returns the task it runs.
func (h *Host) check(b Builder) (BackgroundTask, error) {
	switch {
	case h.isClosed():
		return nil, ErrHostClosed
	case b.Name == "":
		return nil, invalidf("Builder.Name is empty")
	case b.Trigger == nil || b.Trigger.isNil():
		return nil, fmt.Errorf("%w: registration %q", ErrNoTrigger, b.Name)
	case isNilTask(b.Task) && b.TaskEntryPoint == "":
		return nil, fmt.Errorf("%w: registration %q", ErrNoTask, b.Name)
	case b.MaxExecutionTime < 0:
		return nil, invalidf("registration %q: MaxExecutionTime is negative (%v)", b.Name, b.MaxExecutionTime)
	}
	if err := b.Trigger.validate(&h.policy); err != nil {
		return nil, fmt.Errorf("registration %q: %w", b.Name, err)
	}
	for k, c := range b.Conditions {
		if c == nil {
			return nil, invalidf("registration %q: condition %d is nil", b.Name, k)
		}
		if sc, ok := c.(SystemCondition); ok && !sc.Type.valid() {
			return nil, invalidf("registration %q: SystemCondition with unknown Type %v", b.Name, sc.Type)
		}
	}
	task := b.Task
	if isNilTask(task) {
		task = nil
	}
	if b.TaskEntryPoint != "" {
		bound := h.entries[b.TaskEntryPoint]
		if bound == nil {
			return nil, fmt.Errorf("%w: %q (registration %q)", ErrUnknownEntryPoint, b.TaskEntryPoint, b.Name)
		}
		if task == nil {
			task = bound
		}
	}
	return task, nil
}

// isNilTask reports whether t is nil or a nil TaskFunc, which Run could only panic on.
func isNilTask(t BackgroundTask) bool {
	f, isFunc := t.(TaskFunc)
	return t == nil || isFunc && f == nil
}

func (h *Host) isClosed() bool {
	h.lock()
	defer h.unlock()
	return h.closed
}

// AllTasks returns the registrations, sorted by name, then TaskID.
func (h *Host) AllTasks() []*Registration {
	h.lock()
	all := make([]*Registration, 0, len(h.regs))
	for _, r := range h.regs {
		all = append(all, r)
	}
	h.unlock()
	slices.SortFunc(all, func(a, b *Registration) int {
		return cmp.Or(strings.Compare(a.name, b.name), bytes.Compare(a.id[:], b.id[:]))
	})
	return all
}

// Lookup returns the registration with the given TaskID, if it is registered.
func (h *Host) Lookup(id uuid.UUID) (*Registration, bool) {
	h.lock()
	defer h.unlock()
	r, ok := h.regs[id]
	return r, ok
}

// Cancel cancels every running instance with reason. It does not wait for them to finish:
// each has the grace period to do so, and their Completed events say how they ended.
func (h *Host) Cancel(reason CancellationReason) {
	for _, i := range h.runningInstances() {
		i.cancel(reason)
	}
}

// runningInstances returns the live instances, oldest first.
func (h *Host) runningInstances() []*instance {
	h.lock()
	defer h.unlock()
	return h.running.slice(h.live)
}

// fire starts r's task with details, or holds the fire until it can start. explicit is
// for Request, which is refused rather than held while the registration runs or the host
// is suspended.
func (h *Host) fire(r *Registration, details any, explicit bool) ApplicationTriggerResult {
	h.lock()
	defer h.unlock()
	return h.fireLocked(r, details, explicit)
}

// fireLocked is fire with the lock held; an instance it starts is launched by unlock.
func (h *Host) fireLocked(r *Registration, details any, explicit bool) ApplicationTriggerResult {
	switch {
	case h.closed || r.unregistered:
		return DisabledByPolicy
	case explicit && h.suspendedLocked():
		return DisabledByPolicy
	case explicit && r.running != nil:
		return CurrentlyRunning
	}
	r.pending = details
	if r.held {
		return Allowed // coalesced with the fire already held
	}
	if h.canStartLocked(r) {
		h.startLocked(r)
		return Allowed
	}
	r.held = true
	h.queue = append(h.queue, r)
	return Allowed
}

func (h *Host) canStartLocked(r *Registration) bool {
	return r.running == nil && !h.suspendedLocked() && h.conditionsHoldLocked(r) &&
		(h.policy.MaxConcurrent == 0 || h.live < h.policy.MaxConcurrent)
}

// startLocked creates r's instance with the held details; unlock launches it.
func (h *Host) startLocked(r *Registration) {
	i := newInstance(r, r.pending, h.ids.newID())
	if h.policy.IdleTimeout > 0 {
		i.active.Store(h.now()) // set before anyone can check it, at start
	}
	r.pending = nil
	r.running = i
	h.running.push(i)
	h.live++
	h.toLaunch = append(h.toLaunch, i)
	if r.oneShot {
		h.unregisterLocked(r)
	}
}

// dispatchLocked starts the held fires that can start now, oldest first.
func (h *Host) dispatchLocked() {
	keep := h.queue[:0]
	for _, r := range h.queue {
		switch {
		case !r.held:
		case h.canStartLocked(r):
			r.held = false
			h.startLocked(r)
		default:
			keep = append(keep, r)
		}
	}
	clear(h.queue[len(keep):])
	h.queue = keep
}

// launchAll starts the instances' timers and goroutines. Starting a goroutine is most of
// an instance's start, so when many start at once (a burst of time triggers, a Signal to
// many registrations) the work is shared as a tree: each new goroutine first launches
// half of what is left, so the launches spread over the cores and the caller starts
// only about log2(n) goroutines itself.
func (h *Host) launchAll(is []*instance) {
	for len(is) > 0 {
		i, rest := is[0], is[1:]
		delegated := rest[:len(rest)/2]
		is = rest[len(rest)/2:]
		if d := i.reg.maxExecution(); d > 0 {
			i.addTimer(d, func() { i.cancel(ExecutionTimeExceeded) })
		}
		h.startIdleTimer(i)
		go i.run(delegated)
	}
}

// finished is called once per instance, when it finished or was terminated. It queues the
// instance's retirement (see lock.go), which frees the registration and starts what was
// waiting for it, and then its Completed event: a handler that fires the registration
// again finds it free. The event's delivery is counted before the instance stops counting
// as live, so that Shutdown, which waits for the one and then the other, never misses it.
// See instance.release for drain.
func (h *Host) finished(i *instance, te *TerminatedError, inline bool) (drain bool) {
	r := i.reg
	notify := r.progress.watched() || r.completed.watched()
	if notify {
		h.lib.add() // for a delivery goroutine; given back below if one already runs
	}
	i.term = te
	h.retired.push(i)
	if h.mu.TryLock() {
		h.retireLocked()
		h.unlock()
	}
	switch {
	case !notify:
	case !r.events.add(i):
		h.lib.done() // the running delivery goroutine delivers it
	case inline:
		drain = true
	default:
		go h.drainCounted(r)
	}
	return drain
}

// drainCounted delivers r's events on a goroutine already counted in h.lib.
func (h *Host) drainCounted(r *Registration) {
	defer h.lib.done()
	r.drain()
}

func (h *Host) terminatedLocked(i *instance, te *TerminatedError) {
	if i.goroutines.Load() > 0 {
		h.zombies[i] = struct{}{}
	}
	if h.closed {
		h.lost = append(h.lost, i.describe()+": "+te.Error())
	}
}

// forgetZombie is called when the last goroutine of a terminated instance returns.
func (h *Host) forgetZombie(i *instance) {
	h.lock()
	delete(h.zombies, i)
	h.unlock()
}

func (h *Host) unregisterLocked(r *Registration) {
	if r.unregistered {
		return
	}
	r.unregistered = true
	r.held = false
	r.pending = nil
	delete(h.regs, r.id)
	r.trigger.detach(r)
	h.quietLocked(r)
}

// logPanic logs a recovered panic of the program's code: where names it, attrs say for
// which registration or instance.
func (h *Host) logPanic(where string, err error, attrs ...any) {
	attrs = append(attrs, slog.String("panic", err.Error()))
	var pe *PanicError
	if errors.As(err, &pe) {
		attrs = append(attrs, slog.String("stack", string(pe.Stack)))
	}
	h.log.Error("bgtask: panic in "+where+" recovered", attrs...)
}

package bgtask

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// BackgroundTask is a task's code. Run is called on a goroutine of the library, once per
// instance; the instance finishes when Run has returned and every deferral it took is
// complete. ctx is done when the instance is canceled; [context.Cause] then gives the
// [*CanceledError]. Run's error, or its panic as a [*PanicError], is the instance's result.
type BackgroundTask interface {
	Run(ctx context.Context, inst BackgroundTaskInstance) error
}

// TaskFunc is a func used as a [BackgroundTask].
type TaskFunc func(ctx context.Context, inst BackgroundTaskInstance) error

// Run calls f.
func (f TaskFunc) Run(ctx context.Context, inst BackgroundTaskInstance) error { return f(ctx, inst) }

// CanceledHandler is called when an instance is canceled, with the reason.
type CanceledHandler func(inst BackgroundTaskInstance, reason CancellationReason)

// BackgroundTaskInstance is one run of a registration's task. Its methods are safe for
// concurrent use, also after the instance has finished.
type BackgroundTaskInstance interface {
	// InstanceID is new for every run.
	InstanceID() uuid.UUID
	// Progress returns the last value given to SetProgress, 0 before.
	Progress() uint32
	// SetProgress records the task's progress. It never blocks: observers registered with
	// [Registration.OnProgress] receive it later, on a goroutine of the library, coalesced
	// (a value may be replaced by a newer one before it is delivered). Changes after the
	// instance finished are not delivered. SetProgress counts as activity for
	// [Policy].IdleTimeout.
	SetProgress(p uint32)
	// SuspendedCount returns how many times the host suspended this instance.
	SuspendedCount() uint32
	// Task returns the registration this instance runs for.
	Task() *Registration
	// TriggerDetails returns what the trigger said about this run:
	// *ApplicationTriggerDetails, *TimeTriggerDetails, *SystemTriggerDetails, or what a
	// [CustomTrigger] passed.
	TriggerDetails() any
	// GetDeferral takes a deferral: the instance does not finish until it is complete, even
	// after Run returns. After the instance finished (or was terminated) it returns an inert
	// deferral whose Complete does nothing; it never revives the instance.
	GetDeferral() *Deferral
	// OnCanceled adds a handler called once, when the instance is canceled, on a goroutine of
	// the library, after Context is done and never while a lock of the library is held. The
	// handlers of one instance run one after another on the same goroutine, so a handler
	// that blocks delays the later ones, but never the task or the host. A handler added
	// after cancellation is called promptly, the same way: OnCanceled itself never calls it.
	// A panic in a handler is recovered and logged. remove stops a handler that has not yet
	// been called; it does not wait for one that is running. A nil h does nothing.
	OnCanceled(h CanceledHandler) (remove func())
	// Context returns the ctx given to Run: done when the instance is canceled, with the
	// [*CanceledError] as its cause.
	Context() context.Context
	// Checkpoint is a cooperative point: it counts as activity for [Policy].IdleTimeout,
	// blocks while the host is suspended (see [Host.Suspend]) and returns the
	// [*CanceledError] once the instance is canceled, nil otherwise.
	Checkpoint() error
	// Go runs f on a new goroutine under a deferral, with the instance's context. If f
	// returns an error or panics, and no error was reported before, that becomes the
	// instance's result. Go after the instance finished does not run f. A nil f does
	// nothing.
	Go(f func(ctx context.Context) error)
}

// instance implements BackgroundTaskInstance.
type instance struct {
	id      uuid.UUID
	reg     *Registration
	details any
	ctx     context.Context
	stop    context.CancelCauseFunc

	refs       atomic.Int64 // see runRef in deferral.go
	slab       atomic.Pointer[deferralSlab]
	goroutines atomic.Int32 // Run and Go funcs not yet returned
	progress   atomic.Uint32
	suspended  atomic.Uint32
	active     atomic.Int64 // when SetProgress or Checkpoint last ran, for idle detection
	dirty      atomic.Bool  // a progress change waits for delivery
	finished   atomic.Bool  // set once, by finish or terminate
	terminated atomic.Bool
	canceled   atomic.Pointer[CanceledError]
	result     atomic.Pointer[CompletedEventArgs] // set by finish before delivery

	mu       sync.Mutex
	onCancel []*CanceledHandler // handlers not yet called; nil once canceled
	err      error              // first failure reported
	timers   []*time.Timer      // time limit, grace period, idle: stopped at finish
	idle     *time.Timer        // the idle check, also in timers

	prev, next *instance        // in Host.running; guarded by the host's lock
	retireNext *instance        // in Host.retired
	term       *TerminatedError // why it was terminated, for its retirement

	// Owned by the registration's delivery goroutine.
	sentProgress  uint32
	sentCompleted bool
}

func newInstance(r *Registration, details any, id uuid.UUID) *instance {
	ctx, stop := context.WithCancelCause(context.Background())
	i := &instance{id: id, reg: r, details: details, ctx: ctx, stop: stop}
	i.refs.Store(runRef)
	i.goroutines.Store(1)
	return i
}

func (i *instance) InstanceID() uuid.UUID    { return i.id }
func (i *instance) Progress() uint32         { return i.progress.Load() }
func (i *instance) SuspendedCount() uint32   { return i.suspended.Load() }
func (i *instance) Task() *Registration      { return i.reg }
func (i *instance) TriggerDetails() any      { return i.details }
func (i *instance) Context() context.Context { return i.ctx }
func (i *instance) GetDeferral() *Deferral   { return i.deferral() }

func (i *instance) SetProgress(p uint32) {
	i.progress.Store(p)
	i.reg.host.touch(i)
	// Wake the delivery goroutine only when someone watches and no wake-up is pending: the
	// delivery goroutine reads the latest value, which coalesces for free.
	if i.reg.progress.watched() && !i.dirty.Load() && !i.finished.Load() && i.dirty.CompareAndSwap(false, true) {
		i.reg.events.push(i)
	}
}

func (i *instance) Checkpoint() error {
	i.reg.host.touch(i)
	i.reg.host.waitResumed(i)
	if ce := i.canceled.Load(); ce != nil {
		return ce
	}
	return nil
}

func (i *instance) OnCanceled(h CanceledHandler) (remove func()) {
	if h == nil {
		return func() {}
	}
	p := &h
	i.mu.Lock()
	if i.finished.Load() && i.canceled.Load() == nil {
		i.mu.Unlock()
		return func() {} // never canceled now
	}
	if ce := i.canceled.Load(); ce != nil {
		i.mu.Unlock()
		i.reg.host.lib.Go(func() { i.callCanceled([]*CanceledHandler{p}, ce.Reason) })
		return func() {}
	}
	i.onCancel = append(i.onCancel, p)
	i.mu.Unlock()
	return func() {
		i.mu.Lock()
		i.onCancel = slices.DeleteFunc(i.onCancel, func(q *CanceledHandler) bool { return q == p })
		i.mu.Unlock()
	}
}

func (i *instance) Go(f func(ctx context.Context) error) {
	if f == nil {
		return
	}
	d := i.deferral()
	if d == inertDeferral {
		i.reg.host.log.Warn("bgtask: Go after the instance finished: f not run", i.attrs()...)
		return
	}
	i.goroutines.Add(1)
	go func() {
		defer i.goroutineDone()
		defer d.Complete()
		i.fail(protect(func() error { return f(i.ctx) }))
	}()
}

// run is the body of an instance's goroutine: it launches the instances delegated to it
// (see Host.launchAll), calls Run, then releases Run's reference. When that finishes the
// instance, this goroutine delivers the events itself rather than starting another one.
func (i *instance) run(delegated []*instance) {
	i.reg.host.launchAll(delegated)
	task := i.reg.task
	i.fail(protect(func() error { return task.Run(i.ctx, i) }))
	drain := i.release(runRef, true)
	i.goroutineDone()
	if drain {
		// Not drainCounted: a frame less on the way to the handlers (see raise). drain
		// cannot panic, handlers' panics being recovered in call.
		i.reg.drain()
		i.reg.host.lib.done()
	}
}

// protect calls f and turns a panic into a *PanicError.
func protect(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return f()
}

// fail records err as the instance's result unless an error was recorded before.
func (i *instance) fail(err error) {
	if err == nil {
		return
	}
	i.mu.Lock()
	if i.err == nil {
		i.err = err
	}
	i.mu.Unlock()
}

// release drops n references. When that finishes the instance it reports whether the
// caller must run the registration's delivery goroutine itself (inline, a goroutine the
// library owns and registered for it) or, otherwise, it starts one.
func (i *instance) release(n int64, inline bool) (drain bool) {
	if i.refs.Add(-n) != 0 {
		return false
	}
	return i.finish(nil, inline)
}

func (i *instance) goroutineDone() {
	if i.goroutines.Add(-1) == 0 && i.terminated.Load() {
		i.reg.host.forgetZombie(i)
	}
}

// cancel cancels the instance once; later calls, and calls after it finished, do nothing.
// The context is canceled under the lock so that a handler added concurrently cannot run
// before the context is done.
func (i *instance) cancel(reason CancellationReason) {
	i.mu.Lock()
	if i.canceled.Load() != nil || i.finished.Load() {
		i.mu.Unlock()
		return
	}
	ce := &CanceledError{Reason: reason}
	i.canceled.Store(ce)
	i.stop(ce)
	hs := i.onCancel
	i.onCancel = nil
	i.timers = append(i.timers, time.AfterFunc(i.reg.host.policy.grace(), i.terminate))
	i.mu.Unlock()
	if len(hs) > 0 {
		i.reg.host.lib.Go(func() { i.callCanceled(hs, reason) })
	}
}

func (i *instance) callCanceled(hs []*CanceledHandler, reason CancellationReason) {
	for _, h := range hs {
		if err := protect(func() error { (*h)(i, reason); return nil }); err != nil {
			i.reg.host.logPanic("Canceled handler", err, i.attrs()...)
		}
	}
}

// terminate ends an instance whose grace period passed: it is reported with a
// *TerminatedError and its deferrals become inert. Its goroutines, if any still run, are
// remembered as zombies for Shutdown to report.
func (i *instance) terminate() {
	if i.finished.Load() {
		return
	}
	old := i.refs.Swap(deadRefs)
	if old <= 0 {
		return // finished in the meantime; finish is under way
	}
	i.mu.Lock()
	err := i.err
	i.mu.Unlock()
	runLeft := old >= runRef
	te := &TerminatedError{
		Canceled:    i.canceled.Load(),
		RunReturned: !runLeft,
		Deferrals:   int(old % runRef),
		Err:         err,
	}
	te.GoRunning = int(i.goroutines.Load())
	if runLeft {
		te.GoRunning--
	}
	i.terminated.Store(true)
	// Logged here, before the host's lock is taken: a slog handler is the program's code.
	i.reg.host.log.Warn("bgtask: instance terminated", append(i.attrs(), slog.String("err", te.Error()))...)
	if i.finish(te, true) {
		i.reg.host.drainCounted(i.reg)
	}
}

// finish ends the instance exactly once: it stops its timers, records the result, queues
// the Completed event and frees the registration. See release for drain.
func (i *instance) finish(te *TerminatedError, inline bool) (drain bool) {
	if !i.finished.CompareAndSwap(false, true) {
		return false
	}
	i.mu.Lock()
	for _, t := range i.timers {
		t.Stop()
	}
	i.timers = nil
	i.onCancel = nil
	err := i.err
	i.mu.Unlock()
	if te != nil {
		err = te
	}
	res := &CompletedEventArgs{InstanceID: i.id, Err: err, Progress: i.progress.Load()}
	if ce := i.canceled.Load(); ce != nil {
		res.Canceled, res.Reason = true, ce.Reason
	}
	i.result.Store(res)
	return i.reg.host.finished(i, te, inline)
}

// addTimer starts f after d, stopped when the instance finishes.
func (i *instance) addTimer(d time.Duration, f func()) {
	i.mu.Lock()
	if !i.finished.Load() {
		i.timers = append(i.timers, time.AfterFunc(d, f))
	}
	i.mu.Unlock()
}

// attrs are the log attributes naming the instance: its task and its id.
func (i *instance) attrs() []any {
	return append(i.reg.attrs(), slog.String("instance", i.id.String()))
}

// outstanding says what keeps the instance from finishing.
func (i *instance) outstanding() string {
	refs := i.refs.Load()
	run := "Run has not returned"
	if refs < runRef {
		run = "Run returned"
	}
	return fmt.Sprintf("%s, %d deferral(s) outstanding", run, max(refs%runRef, 0))
}

// describe names the instance for Shutdown's error.
func (i *instance) describe() string {
	return fmt.Sprintf("%q instance %s", i.reg.name, i.id)
}

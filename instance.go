package bgtask

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// BackgroundTask is a task's code. Run is called on a goroutine of the library, once per
// instance; the instance finishes when Run has returned and every deferral it took is
// complete. ctx is done when the instance is canceled ([context.Cause] then gives the
// [*CanceledError]) and, at the latest, when it ends ([ErrFinished]). Run's error, or its
// panic as a [*PanicError], is the instance's result.
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
	// [CustomTrigger] passed. [Arg] reads an ApplicationTrigger's arguments.
	TriggerDetails() any
	// GetDeferral takes a deferral: the instance does not finish until it is complete, even
	// after Run returns. After the instance ended it returns an inert deferral whose
	// Complete does nothing; it never revives the instance.
	GetDeferral() *Deferral
	// OnCanceled adds a handler called once, when the instance is canceled, on a goroutine of
	// the library, after Context is done and never while a lock of the library is held. The
	// handlers of one instance run one after another on the same goroutine, so a handler
	// that blocks delays the later ones, but never the task or the host. A handler added
	// after cancellation is called promptly, the same way: OnCanceled itself never calls it.
	// A panic in a handler is recovered and logged. remove stops a handler that has not yet
	// been called; it does not wait for one that is running. A nil h does nothing.
	OnCanceled(h CanceledHandler) (remove func())
	// Context returns the ctx given to Run. It is done when the instance is canceled, with
	// the [*CanceledError] as its cause, and at the latest when the instance finishes or is
	// terminated, with [ErrFinished] as its cause unless it was canceled before.
	Context() context.Context
	// Checkpoint is a cooperative point: it counts as activity for [Policy].IdleTimeout,
	// blocks while the host is suspended (see [Host.Suspend]) and, once Context is done,
	// returns its cause: the [*CanceledError], or ErrFinished after the end. Otherwise it
	// returns nil.
	Checkpoint() error
	// Go runs f on a new goroutine under a deferral, with the instance's context. If f
	// returns an error or panics, and no error was reported before, that becomes the
	// instance's result; unlike errgroup, f's error does not cancel the context. Go after
	// the instance ended does not run f, and logs that. A nil f does nothing.
	Go(f func(ctx context.Context) error)
}

// instance implements BackgroundTaskInstance.
type instance struct {
	id      uuid.UUID
	reg     *Registration
	details any
	// The registration's task and time limit when it started, read under the host's lock:
	// an Ensure that changes them applies to the next instance, never to a running one.
	task  BackgroundTask
	limit time.Duration
	ctx   context.Context
	stop  context.CancelCauseFunc
	// started is when Run was called, in Unix nanoseconds: 0 before, and neverStarted for
	// an instance terminated before its goroutine called Run.
	started atomic.Int64

	refs       atomic.Int64 // whether and how it ended: see runRef in deferral.go
	goroutines atomic.Int32 // Run and Go funcs not yet returned
	progress   atomic.Uint32
	suspended  atomic.Uint32
	active     atomic.Int64 // when SetProgress or Checkpoint last ran, for idle detection
	dirty      atomic.Bool  // a progress change waits for delivery
	canceled   atomic.Pointer[CanceledError]
	result     atomic.Pointer[CompletedEventArgs] // &outcome once it ended, else nil
	outcome    CompletedEventArgs

	mu       sync.Mutex
	onCancel subscribers[CanceledHandler]
	err      error         // the first failure reported
	timers   []*time.Timer // time limit, grace period, idle: stopped at the end
	idle     *time.Timer   // the idle check, also in timers
	sites    *deferralSite // the ring of outstanding deferrals, with WithDeferralSites; else nil

	// Guarded by the host's lock.
	waiters    []chan<- CompletedEventArgs // RequestAndWait callers
	prev, next *instance                   // in Host.insts
	listed     bool                        // in Host.insts

	deleteFirst bool // a persistent OneShot's: run deletes its record before Run (see Host.deleteOneShot)
	events      bool // its events are to be delivered; set when it is retired
	drainHere   bool // the goroutine it ended on delivers them (see raiseRetired)

	// For the registration's delivery goroutine.
	job           job // counts the delivery of its events
	sentProgress  uint32
	sentCompleted bool
}

func newInstance(r *Registration, details any, id uuid.UUID) *instance {
	ctx, stop := context.WithCancelCause(context.Background())
	i := &instance{id: id, reg: r, details: details, ctx: ctx, stop: stop}
	if r.host.sites {
		i.sites = new(deferralSite)
		i.sites.prev, i.sites.next = i.sites, i.sites
	}
	i.job.reg = r
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

func (i *instance) GetDeferral() *Deferral {
	if d := i.deferral(false, 1); d != nil {
		return d
	}
	return inertDeferral
}

func (i *instance) SetProgress(p uint32) {
	i.progress.Store(p)
	i.reg.host.touch(i)
	// Wake the delivery goroutine only when someone watches and no wake-up is pending: the
	// delivery goroutine reads the latest value, which coalesces for free.
	if i.reg.progress.watched() && !i.dirty.Load() && i.refs.Load() > 0 && i.dirty.CompareAndSwap(false, true) {
		i.reg.queueEvent(i)
	}
}

func (i *instance) Checkpoint() error {
	i.reg.host.touch(i)
	if i.ctx.Err() == nil {
		i.reg.host.waitResumed(i.ctx)
	}
	if i.ctx.Err() != nil {
		return context.Cause(i.ctx)
	}
	return nil
}

func (i *instance) OnCanceled(h CanceledHandler) (remove func()) {
	if h == nil {
		return func() {}
	}
	i.mu.Lock()
	ce, ended := i.canceled.Load(), i.refs.Load() <= 0
	if ce == nil && !ended {
		remove = i.onCancel.add(h)
		i.mu.Unlock()
		return remove
	}
	i.mu.Unlock()
	if ce != nil { // a late subscriber: called promptly, never by OnCanceled itself
		i.callCanceled([]*subscriber[CanceledHandler]{{f: h}}, ce.Reason)
	}
	return func() {}
}

func (i *instance) Go(f func(ctx context.Context) error) {
	if f == nil {
		return
	}
	// Counted before the deferral is taken, so that a termination racing with Go counts
	// this goroutine among those left running.
	i.goroutines.Add(1)
	d := i.deferral(true, 1)
	if d == nil {
		i.goroutineDone()
		i.reg.host.problem("Go after the instance ended: f not run", nil, i.reg, i.id)
		return
	}
	go func() {
		err := errGoexit // unless f returns
		defer func() {
			i.fail(err)
			d.Complete()
			i.goroutineDone()
		}()
		err = capture(func() error { return f(i.ctx) })
		i.panicked("a Go func", err)
	}()
}

// run is the body of an instance's goroutine: it calls Run, then releases Run's reference.
// When that ends the instance, this goroutine retires it, and delivers its events itself
// rather than starting another goroutine (see Host.retire).
func (i *instance) run() {
	if i.deleteFirst {
		i.reg.host.deleteOneShot(i)
	}
	if i.runTask() {
		i.retireHere()
	}
}

// retireHere retires the instance on the goroutine it ended on (its own, or its grace
// timer's), and delivers its events there if retiring leaves that to it. Both are done
// here, in a small frame, not deep in the call that ended the instance, where the
// goroutine's first stack is nearly used up: retiring sends the EventCompleted, and the
// handlers run. From there, the stack grew for them: BenchmarkInstanceEndToEndSubscribed
// spent 20% of its time copying stacks when the handlers ran there, and took 4.3–5.0 µs
// per instance, against 2.7–3.3 µs from here, when the event was sent there.
func (i *instance) retireHere() {
	if i.reg.host.retire(i, true) {
		i.deliverOwn()
	}
}

// deliverOwn delivers the events of the instance, which ended on this goroutine, to its
// handlers, if retiring it left that to this goroutine (see Host.raiseRetired).
func (i *instance) deliverOwn() {
	if !i.drainHere {
		return
	}
	defer i.reg.host.lib.end(&i.job) // deferred: a handler may call runtime.Goexit
	i.reg.drain(&i.job, nil)
}

// runTask calls Run and releases its reference. It reports whether that ended the
// instance, which the caller then retires (retireHere).
func (i *instance) runTask() (retire bool) {
	if !i.started.CompareAndSwap(0, time.Now().UnixNano()) { // terminated first: Run is not called
		i.goroutineDone()
		return false
	}
	returned := false
	defer func() {
		if !returned { // Run called runtime.Goexit: the goroutine ends after this
			i.runReturned(errGoexit, false)
		}
	}()
	err := capture(func() error { return i.task.Run(i.ctx, i) })
	returned = true
	if err != nil {
		i.panicked("Run", err)
	}
	return i.runReturned(err, true)
}

// runReturned records Run's result and releases its reference. See release for inline
// and retire.
func (i *instance) runReturned(err error, inline bool) (retire bool) {
	i.fail(err)
	retire = i.release(runRef, inline)
	i.goroutineDone()
	return retire
}

// panicked reports err if it is a recovered panic of the code named where.
func (i *instance) panicked(where string, err error) {
	if _, ok := err.(*PanicError); ok {
		i.reg.host.logPanic(where, err, i.reg, i.id)
	}
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

// release drops n references. When that ends the instance, the caller, if inline (a
// goroutine the library owns, which returns to a small frame), is to retire it, with
// retireHere: release then reports true. Otherwise release retires it.
func (i *instance) release(n int64, inline bool) (retire bool) {
	if i.refs.Add(-n) != 0 {
		return false
	}
	return i.end(nil, inline)
}

func (i *instance) goroutineDone() {
	if i.goroutines.Add(-1) == 0 && i.refs.Load() < 0 {
		i.reg.host.forgetTerminated(i)
	}
}

// cancel cancels the instance once and reports whether it did: later calls, and calls
// after it ended, do nothing. The context is canceled under the lock so that a handler
// added concurrently cannot run before the context is done.
func (i *instance) cancel(reason CancellationReason) bool { return i.cancelAnd(reason, nil) }

// cancelAnd is cancel, which also sends also, if not nil, right after the EventCanceled:
// under the instance's lock, so that it comes before the instance's EventCompleted.
func (i *instance) cancelAnd(reason CancellationReason, also *Event) bool {
	i.mu.Lock()
	if i.canceled.Load() != nil || i.refs.Load() <= 0 {
		i.mu.Unlock()
		return false
	}
	ce := &CanceledError{Reason: reason}
	i.canceled.Store(ce)
	i.stop(ce)
	i.timers = append(i.timers, time.AfterFunc(i.reg.host.policy.grace(), i.terminate))
	hs := i.onCancel.load()
	h := i.reg.host
	var e *Event
	if h.stream.wants(EventCanceled) {
		e = h.sendCanceled(i, reason) // under the lock: before the instance can end
	}
	if also != nil {
		h.send(also)
	}
	// What is left to do after the unlock, the log and the handlers' goroutine, is counted
	// before the instance can end, so that Shutdown, which waits for the instance, waits
	// for it too: this may run on a goroutine the library does not count (a timer's).
	logs := e != nil && h.stream.logs(e) || also != nil && h.stream.logs(also)
	held := logs || len(hs) > 0
	if held {
		h.lib.hold()
	}
	i.mu.Unlock()
	if !held {
		return true
	}
	defer h.lib.release()
	for _, e := range [...]*Event{e, also} {
		if e != nil && h.stream.logs(e) {
			h.logEvent(e)
		}
	}
	if len(hs) > 0 {
		i.callCanceled(hs, reason)
	}
	return true
}

// callCanceled calls the handlers on a goroutine of the library.
func (i *instance) callCanceled(hs []*subscriber[CanceledHandler], reason CancellationReason) {
	i.reg.host.lib.Go(i.reg, func(j *job) {
		callEach(i.reg.host, j, &inCanceledHandler, hs, i, true, func(h CanceledHandler) { h(i, reason) })
	})
}

// terminate ends an instance whose grace period passed: it is reported with a
// *TerminatedError and its deferrals become inert. If its goroutines still run, it stays
// listed by Host.Instances until they return.
func (i *instance) terminate() {
	var old int64
	for {
		if old = i.refs.Load(); old <= 0 {
			return // it ended meanwhile
		}
		if i.refs.CompareAndSwap(old, deadRefs) {
			break
		}
	}
	i.started.CompareAndSwap(0, neverStarted) // Run is not called if it was not yet
	runLeft := old >= runRef
	goRunning := int(i.goroutines.Load())
	if runLeft {
		goRunning = max(goRunning-1, 0) // Run may have returned since the swap
	}
	i.mu.Lock()
	err := i.err
	i.mu.Unlock()
	te := &TerminatedError{
		Canceled:    i.canceled.Load(),
		RunReturned: !runLeft,
		Deferrals:   int(old % runRef),
		GoRunning:   goRunning,
		Err:         err,
		Outstanding: i.deferrals(old, goRunning),
	}
	if i.sites != nil { // the list was read after the count: deferrals completed meanwhile
		te.Deferrals = len(te.Outstanding)
	}
	if h := i.reg.host; h.stream.wants(EventTerminated) {
		res := &CompletedEventArgs{InstanceID: i.id, Err: te, Progress: i.progress.Load(),
			Started: i.startedAt(), Finished: time.Now()}
		if te.Canceled != nil {
			res.Canceled, res.Reason = true, te.Canceled.Reason
		}
		h.emitTerminated(i, res)
	}
	if i.end(te, true) {
		i.retireHere()
	}
}

// end ends the instance, once: its reference count has just reached zero, or terminate
// swapped in deadRefs. It ends the context, stops the timers, records the result and
// retires the instance from the host, or leaves that to the caller: see release for inline
// and retire.
func (i *instance) end(te *TerminatedError, inline bool) (retire bool) {
	i.mu.Lock()
	i.stop(ErrFinished) // a cause set by cancel before stays
	timers := i.timers
	i.timers = nil
	err := i.err
	ce := i.canceled.Load()
	i.mu.Unlock()
	for _, t := range timers {
		t.Stop()
	}
	if te != nil {
		err = te
	}
	res := &i.outcome // written once, here, before result publishes it
	*res = CompletedEventArgs{InstanceID: i.id, Err: err, Progress: i.progress.Load(),
		Started: i.startedAt(), Finished: time.Now()}
	if ce != nil {
		res.Canceled, res.Reason = true, ce.Reason
	}
	i.result.Store(res)
	if inline {
		return true
	}
	i.reg.host.retire(i, false)
	return false
}

// addTimer runs f after d, unless the instance has ended; the end stops it.
func (i *instance) addTimer(d time.Duration, f func()) *time.Timer {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.refs.Load() <= 0 {
		return nil
	}
	t := time.AfterFunc(d, f)
	i.timers = append(i.timers, t)
	return t
}

// neverStarted is instance.started of an instance terminated before Run was called.
const neverStarted = -1

// startedAt returns when Run was called, zero before and if never.
func (i *instance) startedAt() time.Time {
	if n := i.started.Load(); n > 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// InstanceState says where a running instance is in its life.
type InstanceState int

const (
	// InstanceRunning: Run has not returned, and the instance is not canceled.
	InstanceRunning InstanceState = iota
	// InstanceDraining: Run has returned and deferrals are outstanding.
	InstanceDraining
	// InstanceCanceling: canceled, within its grace period.
	InstanceCanceling
	// InstanceTerminated: terminated. Instances lists such an instance while some of its
	// goroutines still run; ShutdownError lists those terminated during Shutdown whether
	// or not they do (its text says which still run).
	InstanceTerminated
)

var stateNames = [...]string{"Running", "Draining", "Canceling", "Terminated"}

// String returns the state's name without its prefix, such as "Draining".
func (s InstanceState) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "InstanceState(" + strconv.Itoa(int(s)) + ")"
}

// InstanceInfo is a snapshot of an instance, from [Host.Instances].
type InstanceInfo struct {
	Task           *Registration
	InstanceID     uuid.UUID
	Details        any // the instance's TriggerDetails
	Started        time.Time
	Progress       uint32
	SuspendedCount uint32
	State          InstanceState
	Reason         CancellationReason // when State is InstanceCanceling or InstanceTerminated
	// Deferrals are the outstanding deferrals, oldest first; Run's own hold is not one.
	// With [WithDeferralSites] off only their number and Go are known.
	Deferrals []DeferralInfo

	goRunning bool // terminated, and Run or a Go func has not returned: for describe
}

// info takes a snapshot of the instance.
func (i *instance) info() InstanceInfo {
	in := InstanceInfo{Task: i.reg, InstanceID: i.id, Details: i.details, Started: i.startedAt(),
		Progress: i.progress.Load(), SuspendedCount: i.suspended.Load()}
	if ce := i.canceled.Load(); ce != nil {
		in.State, in.Reason = InstanceCanceling, ce.Reason
	}
	refs := i.refs.Load()
	switch {
	case refs < 0:
		in.State, in.goRunning = InstanceTerminated, i.goroutines.Load() > 0
		if res := i.result.Load(); res != nil { // nil only while terminate is under way
			if te, ok := res.Err.(*TerminatedError); ok {
				in.Deferrals = te.Outstanding
			}
		}
		return in
	case refs < runRef && in.State == InstanceRunning:
		in.State = InstanceDraining
	}
	goRunning := int(i.goroutines.Load())
	if refs >= runRef {
		goRunning--
	}
	in.Deferrals = i.deferrals(refs, goRunning)
	return in
}

// describe names the instance and what it left, for ShutdownError.
func (in InstanceInfo) describe() string {
	name := "<nil>"
	if in.Task != nil {
		name = strconv.Quote(in.Task.name)
	}
	s := fmt.Sprintf("%s instance %s: ", name, in.InstanceID)
	switch in.State {
	case InstanceRunning:
		s += "running, Run has not returned"
	case InstanceDraining:
		s += "draining, Run returned"
	case InstanceCanceling:
		s += "canceled after " + in.Reason.String() + ", in its grace period"
	case InstanceTerminated:
		s += "terminated after " + in.Reason.String()
		if in.goRunning {
			s += ", its goroutines still running"
		}
	default:
		s += in.State.String()
	}
	s += fmt.Sprintf(", %d deferral(s) outstanding", len(in.Deferrals))
	if sites := siteList(in.Deferrals); sites != "" {
		s += " (taken at " + sites + ")"
	}
	return s
}

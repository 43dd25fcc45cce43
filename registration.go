package bgtask

import (
	"cmp"
	"context"
	"math"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Builder describes a registration for [Host.Register]. Name and Trigger are required, and
// one of Task and TaskEntryPoint. The zero value is not a valid registration.
type Builder struct {
	// Name names the registration in logs and in [Host.AllTasks]. Required; several
	// registrations may share a name (each fires).
	Name string
	// Task is the code to run.
	Task BackgroundTask
	// TaskEntryPoint names a task bound with [WithEntryPoint]: the code to run when Task is
	// nil. When both are set, Task runs and TaskEntryPoint must still be bound.
	TaskEntryPoint string
	// Trigger decides when the task runs. Required.
	Trigger Trigger
	// Conditions must all hold for the task to start; a fire while one does not is held
	// until they all do.
	Conditions []Condition
	// CancelOnConditionLoss cancels a running instance with [ConditionLoss] when one of
	// Conditions stops holding. Without it the instance runs on.
	CancelOnConditionLoss bool
	// MaxExecutionTime limits each instance's time from start, after which it is canceled
	// with [ExecutionTimeExceeded]. 0 means the host policy's value; it must not be negative.
	MaxExecutionTime time.Duration
}

// Registration is a task registered with a host. It is safe for concurrent use; the zero
// value is not usable: registrations come from [Host.Register].
//
// At most one instance of a registration runs at a time.
type Registration struct {
	// Guarded by host.mu; first, so that a fire reads one or two cache lines of it
	// (BenchmarkTimeTriggersDueAtOneInstant touches 10,000 registrations in a burst).
	sched            schedState // time trigger state
	running          *instance  // the live instance, if any
	held             bool       // a fire is held (see dispatch.go)
	waitingSlot      bool       // in Host.slots
	heldBy           HeldBy     // what holds the held fire, as last reported
	unregistered     bool
	unregisterCalled bool // by the program; a OneShot registration unregisters itself too
	quiet            bool // its trigger's and conditions' watches are stopped
	oneShot          bool // the trigger's settings, read once by Register
	spent            bool // a OneShot whose fire a Dispatcher took (see Host.dispatch)
	updating         bool // Ensure is changing its settings (see Host.update)
	kind             triggerKind
	persistent       bool                // kept in the host\'s store
	last             *CompletedEventArgs // the last Completed event\'s arguments
	cond             *condState          // the conditions' readings; nil without conditions
	task             BackgroundTask      // read by a fire, with maxExec: Ensure may change both
	maxExec          time.Duration
	pending          any // the held fire's details
	host             *Host
	waiters          []chan<- CompletedEventArgs
	sysIndex         int    // for a system trigger: its place in Host.system[sysType]
	stopWatch        func() // ends a custom trigger's Watch

	id           uuid.UUID
	name         string
	trigger      Trigger
	entryPoint   string
	conditions   []Condition
	cancelOnLoss bool
	sysType      SystemTriggerType
	watch        func(ctx context.Context, fire func(details any) ApplicationTriggerResult) error

	progress  subscribers[func(ProgressEventArgs)]
	completed subscribers[func(CompletedEventArgs)]
	events    eventQueue
}

// TaskID identifies the registration.
func (r *Registration) TaskID() uuid.UUID { return r.id }

// Name returns the Builder's Name.
func (r *Registration) Name() string { return r.name }

// Trigger returns the Builder's Trigger.
func (r *Registration) Trigger() Trigger {
	r.host.lock()
	defer r.host.unlock()
	return r.trigger // Ensure may replace it
}

// TriggerString describes the registration's trigger as Register or Ensure read it, as the
// trigger's String method would have then, such as "TimeTrigger every 15m0s". It does not
// read the trigger value, whose fields the program may have changed since (one value may
// serve several registrations, each with the settings it had when it was registered).
func (r *Registration) TriggerString() string {
	r.host.lock()
	defer r.host.unlock()
	return r.settingsLocked().String()
}

// OneShot reports whether the registration's trigger is OneShot, as Register or Ensure read
// it (see TriggerString).
func (r *Registration) OneShot() bool {
	r.host.lock()
	defer r.host.unlock()
	return r.oneShot
}

// settingsLocked returns the trigger settings that r keeps (a CustomTrigger's Watch aside).
func (r *Registration) settingsLocked() triggerSettings {
	return triggerSettings{kind: r.kind, oneShot: r.oneShot, period: time.Duration(r.sched.period), sysType: r.sysType}
}

// Conditions returns the Builder's Conditions (a copy of the slice).
func (r *Registration) Conditions() []Condition {
	r.host.lock()
	defer r.host.unlock()
	return slices.Clone(r.conditions) // Ensure may replace them
}

// OnProgress adds a handler for the progress of this registration's instances. Handlers
// run on a goroutine of the library, one event at a time for the registration, in order
// for each instance; they may block, which delays only this registration's events, never a
// task. Values may be coalesced (the latest wins) and an event is raised only when the
// value changed; an instance's last value is delivered before its Completed event. A panic
// in a handler is recovered and logged. remove does not wait for a handler that is running.
// A nil h does nothing.
func (r *Registration) OnProgress(h func(ProgressEventArgs)) (remove func()) {
	if h == nil {
		return func() {}
	}
	return r.progress.add(h)
}

// OnCompleted adds a handler called exactly once for each instance that finishes while it
// is registered, after the instance's last progress event, on the same goroutine and
// terms as [Registration.OnProgress].
func (r *Registration) OnCompleted(h func(CompletedEventArgs)) (remove func()) {
	if h == nil {
		return func() {}
	}
	return r.completed.add(h)
}

// Unregister removes the registration: its trigger no longer fires it. A held fire is
// dropped, and its Completed event raised as canceled with [Abort]. With cancelTask, a
// running instance is canceled with Abort; without, it runs to its end. Either way its
// Completed event is still raised. Unregister does not wait for the instance. Calling it
// again does nothing. A OneShot registration, unregistered when its instance started, can
// still be called once to cancel that instance.
func (r *Registration) Unregister(cancelTask bool) {
	h := r.host
	h.lock()
	inst, again, recorded := r.running, r.unregisterCalled, !r.unregistered && r.persistent
	r.unregisterCalled = true
	h.unregisterLocked(r, Abort)
	h.unlock()
	if again {
		return
	}
	if recorded {
		if err := h.saver.commit(context.Background(), nil, []uuid.UUID{r.id}); err != nil {
			h.emit(&Event{Kind: EventStoreError, Task: r, Err: err})
			h.saver.deleteLater(r.id)
		}
	}
	if cancelTask && inst != nil {
		inst.cancel(Abort)
	}
}

// NextFire returns when the registration's TimeTrigger is next due, and false for a
// registration with another trigger, one that is unregistered, one that never fires again
// (a period too long to add), or a OneShot one whose fire a [Dispatcher] took. A fire due
// while the instance runs starts when it ends (see [TimeTrigger]): while a fire is held
// (the instance runs, a condition does not hold, the host is suspended), NextFire returns
// the time of the first slot held, in the past; the fire starts when what holds it lets
// go, with ScheduledAt the latest slot missed. The time has no monotonic clock reading,
// so that it compares by the wall clock, as a time read back from a store does.
func (r *Registration) NextFire() (time.Time, bool) {
	r.host.lock()
	defer r.host.unlock()
	if r.kind != timeKind || r.unregistered || r.spent || r.sched.next == math.MaxInt64 {
		return time.Time{}, false
	}
	return r.host.epoch.Add(time.Duration(r.sched.next)).Round(0), true
}

// LastResult returns the arguments of the registration's last Completed event, and false
// before the first. With a store, it survives restarts: Err then has the same text and
// matches ErrCanceled, ErrTerminated and ErrUnknownEntryPoint where it did.
func (r *Registration) LastResult() (CompletedEventArgs, bool) {
	r.host.lock()
	defer r.host.unlock()
	if r.last == nil {
		return CompletedEventArgs{}, false
	}
	return *r.last, true
}

// maxExecution is the instance time limit in force: the builder's, else the policy's.
func (r *Registration) maxExecution() time.Duration {
	return cmp.Or(r.maxExec, r.host.policy.MaxExecutionTime)
}

// ProgressEventArgs is the argument of a progress event.
type ProgressEventArgs struct {
	InstanceID uuid.UUID
	Progress   uint32
}

// CompletedEventArgs is the argument of a Completed event, raised once for every accepted
// fire: when its instance ended, or when it was dropped before it started.
type CompletedEventArgs struct {
	InstanceID uuid.UUID
	// Err is nil, the task's error, a [*PanicError], an error wrapping [ErrTerminated], or,
	// for a fire dropped before it started, the [*CanceledError].
	Err      error
	Canceled bool               // whether the instance was canceled
	Reason   CancellationReason // why, when Canceled
	Progress uint32             // the last progress value
	// Started is when Run was called: zero for a fire dropped before it started, and for an
	// instance terminated before its goroutine called Run (Err then matches ErrTerminated,
	// and Run is never called). Run is called if and only if Started is set.
	Started  time.Time
	Finished time.Time // when the instance finished, was terminated, or was dropped
}

// CheckResult returns Err.
func (e CompletedEventArgs) CheckResult() error { return e.Err }

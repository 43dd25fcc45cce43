package bgtask

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Locks, and the order in which they are taken (a lock is never taken while one later in
// the list is held):
//
//  1. Host.mu: registrations, held fires, the running instances, the scheduler's heap,
//     suspension, condition readings and system conditions. Taken through lock and unlock
//     (dispatch.go), never around user code.
//  2. instance.mu: an instance's first error, timers, Canceled handlers and deferral sites.
//  3. saver.mu: the store writes waiting (store.go); it takes tracker.mu to count its timer.
//  4. The leaves, which take no other lock: endingList.mu, ApplicationTrigger.mu,
//     tracker.mu, subscribers.mu, eventQueue.mu, sink.mu, Switch.mu.
//
// No lock is held while the store is written (Store.Apply), nor around user code.
//
// Hot paths take none of them: SetProgress, GetDeferral and Complete use atomics.

// Host runs registered tasks: it owns their triggers, applies its [Policy], tracks every
// running instance and shuts down gracefully. A Host is safe for concurrent use; the zero
// value is not usable: hosts come from [NewHost]. A host starts no goroutine of its own
// until something needs one, and [Host.Shutdown] stops and joins all of them.
type Host struct {
	policy     Policy
	stream     stream // events, to the log and to subscribers
	entries    map[string]BackgroundTask
	sites      bool       // WithDeferralSites
	saver      *saver     // WithStore; nil without a store
	dispatcher Dispatcher // WithDispatcher; nil without one
	lib        tracker    // the library's goroutines: event delivery, handlers, the scheduler
	epoch      time.Time  // for the monotonic clock of the scheduler and idle detection
	memory     memoryWatch

	mu        sync.Mutex
	regs      map[uuid.UUID]*Registration
	ensuring  map[ensureKey]chan struct{} // the Ensures under way, by what they look for
	closed    bool
	insts     instList  // started and not ended, or terminated with goroutines left
	live      countdown // instances started and not ended
	updates   countdown // Ensure's updates under way: Shutdown waits for them before its last write
	seq       uint64    // hold order
	ids       idPool
	held      map[*Registration]uint64 // registrations with a held fire, and when it was held
	slots     []*Registration          // held fires waiting only for a MaxConcurrent slot, oldest first
	toLaunch  []*instance              // started under the lock, launched by unlock
	ending    endingList               // instances that ended, to retire (see retire)
	retired   []*instance              // retired or dropped under the lock: unlock raises their events
	events    []Event                  // sent under the lock: unlock logs them
	lost      []*instance              // instances terminated during Shutdown
	completed completions              // the last ones, for Completions
	system    map[SystemTriggerType][]*Registration
	sched     *scheduler // time triggers; nil until the first is registered
	pause     pauseState
	sysState  map[SystemConditionType]bool
	sysWatch  map[SystemConditionType]watchSet
}

// NewHost returns a host configured by opts, or the first option's error.
func NewHost(opts ...Option) (*Host, error) {
	h := &Host{
		entries: make(map[string]BackgroundTask),
		regs:    make(map[uuid.UUID]*Registration),
		held:    make(map[*Registration]uint64),
		epoch:   time.Now(),
	}
	h.stream.log = slog.Default()
	for _, o := range opts {
		if o.apply == nil {
			continue
		}
		if err := o.apply(h); err != nil {
			return nil, err
		}
	}
	h.stream.setLog(h.stream.log)
	if h.dispatcher != nil && h.saver == nil {
		return nil, invalidf("WithDispatcher", "without WithStore: the processes that take the fires must know the registrations")
	}
	if h.saver != nil {
		if err := h.restore(); err != nil {
			return nil, err
		}
	}
	h.startMemoryWatch()
	return h, nil
}

// Register validates b and registers it: from now on its trigger starts its task. The
// errors match [ErrNoTrigger], [ErrNoTask], [ErrUnknownEntryPoint],
// [ErrInvalidFreshness], [ErrHostClosed], or [ErrInvalidArgument] for an empty name, a
// negative MaxExecutionTime, a nil condition or an unknown trigger or condition type.
// Register does not start the task: the trigger does, when it fires. It reads b's trigger
// and conditions once: changing them later does not change the registration.
//
// Register reads each condition once and subscribes to it (see [Condition]), on the
// calling goroutine.
func (h *Host) Register(b Builder) (*Registration, error) {
	task, set, err := h.check(b)
	if err != nil {
		return nil, err
	}
	r := h.newRegistration(b, task, set)
	if h.saver != nil && b.TaskEntryPoint != "" {
		if err := h.fleetIdentity(r); err != nil {
			return nil, err
		}
	}
	if err := h.store(r, b, set); err != nil {
		return nil, err
	}
	h.watchConditions(r, r.conditions)
	h.lock()
	if _, taken := h.regs[r.id]; taken && h.dispatcher != nil { // a Register of the same name came meanwhile
		h.unlock()
		return nil, invalidf("Register", "registration %q with entry point %q exists: use Ensure", r.name, r.entryPoint)
	}
	if h.closed { // Shutdown came meanwhile
		r.unregistered = true
		h.quietLocked(r)
		h.unlock()
		if r.persistent {
			_ = h.saver.commit(context.Background(), nil, []uuid.UUID{r.id})
		}
		return nil, ErrHostClosed
	}
	h.regs[r.id] = r
	r.trigger.attach(r)
	h.registeredLocked(r)
	h.unlock()
	return r, nil
}

// newRegistration returns the registration b describes, not yet registered.
func (h *Host) newRegistration(b Builder, task BackgroundTask, set triggerSettings) *Registration {
	r := &Registration{
		host:         h,
		id:           newTaskID(),
		name:         b.Name,
		trigger:      b.Trigger,
		task:         task,
		entryPoint:   b.TaskEntryPoint,
		conditions:   slices.Clone(b.Conditions),
		cancelOnLoss: b.CancelOnConditionLoss,
		maxExec:      b.MaxExecutionTime,
		kind:         set.kind,
		oneShot:      set.oneShot,
		sysType:      set.sysType,
		watch:        set.watch,
	}
	r.sched.index = -1
	if set.kind == timeKind {
		r.sched.period = int64(set.period)
		r.sched.next = addSat(h.now(), r.sched.period)
	}
	return r
}

// store stores r, not yet registered, if it is persistent (see WithStore).
func (h *Host) store(r *Registration, b Builder, set triggerSettings) error {
	if h.saver == nil || b.TaskEntryPoint == "" {
		return nil
	}
	if err := persistable(b, set); err != nil {
		return err
	}
	r.persistent = true
	put := map[uuid.UUID][]byte{r.id: r.encodeRecordLocked()} // not shared yet: no lock needed
	if err := h.saver.commit(context.Background(), put, nil); err != nil {
		return fmt.Errorf("bgtask: registration %q: storing it: %w", b.Name, err)
	}
	return nil
}

// check validates b and returns the task it runs and its trigger's settings.
func (h *Host) check(b Builder) (BackgroundTask, triggerSettings, error) {
	var set triggerSettings
	subject := "registration " + strconv.Quote(b.Name)
	switch {
	case h.isClosed():
		return nil, set, ErrHostClosed
	case b.Name == "":
		return nil, set, invalidf("registration", "Builder.Name is empty")
	case isNil(b.Trigger):
		return nil, set, errorf(ErrNoTrigger, subject, "")
	case isNil(b.Task) && b.TaskEntryPoint == "":
		return nil, set, errorf(ErrNoTask, subject, noTask(b.Task))
	case b.MaxExecutionTime < 0:
		return nil, set, invalidf(subject, "MaxExecutionTime is negative (%v)", b.MaxExecutionTime)
	}
	if capture(func() error { set = b.Trigger.settings(); return nil }) != nil {
		return nil, set, errorf(ErrNoTrigger, subject, "the trigger is a nil trigger inside a value")
	}
	if err := set.validate(subject, &h.policy); err != nil {
		return nil, set, err
	}
	for k, c := range b.Conditions {
		if isNil(c) {
			return nil, set, invalidf(subject, "condition %d is nil", k)
		}
		if sc, ok := c.(SystemCondition); ok && !sc.Type.valid() {
			return nil, set, invalidf(subject, "SystemCondition with unknown Type %v", sc.Type)
		}
	}
	task := b.Task
	if isNil(task) {
		task = nil
	}
	if b.TaskEntryPoint != "" {
		bound := h.entries[b.TaskEntryPoint]
		if bound == nil {
			return nil, set, errorf(ErrUnknownEntryPoint, subject, strconv.Quote(b.TaskEntryPoint))
		}
		if task == nil {
			task = bound
		}
	}
	return task, set, nil
}

// noTask says what a builder without a task has: nothing, or a typed nil, which counts as
// none.
func noTask(task BackgroundTask) string {
	if task == nil {
		return ""
	}
	return fmt.Sprintf("Task is a nil %T", task)
}

// isNil reports whether v is nil or an interface holding a nil pointer, func, map or
// slice: a typed nil that the library would only panic on later.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Slice, reflect.Interface, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

func (h *Host) isClosed() bool {
	h.lock()
	defer h.unlock()
	return h.closed
}

// AllTasks returns the registrations, sorted by name, then TaskID.
func (h *Host) AllTasks() []*Registration {
	all := h.registrations()
	slices.SortFunc(all, func(a, b *Registration) int {
		return cmp.Or(strings.Compare(a.name, b.name), bytes.Compare(a.id[:], b.id[:]))
	})
	return all
}

// registrations returns the registrations, in no order: the part of AllTasks that holds
// the lock (BenchmarkRegistrationsLockHold: 10,000 in about 0.1 ms).
func (h *Host) registrations() []*Registration {
	h.lock()
	defer h.unlock()
	all := make([]*Registration, 0, len(h.regs))
	for _, r := range h.regs {
		all = append(all, r)
	}
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
	for _, i := range h.running() {
		i.cancel(reason)
	}
}

// CancelInstance cancels the running instance with the given InstanceID with reason, and
// reports whether it did: false for an unknown, ended or already canceled instance. It does
// not wait for the instance to finish.
func (h *Host) CancelInstance(id uuid.UUID, reason CancellationReason) bool {
	var found *instance
	h.lock()
	for i := h.insts.head; i != nil; i = i.next {
		if i.id == id {
			found = i
			break
		}
	}
	h.unlock()
	return found != nil && found.cancel(reason)
}

// Instances returns a snapshot of every instance that has started and not ended, and of
// every terminated instance whose goroutines still run, oldest first.
func (h *Host) Instances() []InstanceInfo {
	insts := h.instances()
	infos := make([]InstanceInfo, len(insts))
	for k, i := range insts {
		infos[k] = i.info()
	}
	return infos
}

// instances returns the instances Instances lists, oldest first.
func (h *Host) instances() []*instance {
	h.lock()
	defer h.unlock()
	var insts []*instance
	for i := h.insts.head; i != nil; i = i.next {
		insts = append(insts, i)
	}
	return insts
}

// running returns the instances that have started and not ended, oldest first.
func (h *Host) running() []*instance {
	return slices.DeleteFunc(h.instances(), func(i *instance) bool { return i.refs.Load() <= 0 })
}

// logPanic reports a recovered panic of the program's code (EventPanic): where names it,
// r and id, when known, the registration and instance it ran for.
func (h *Host) logPanic(where string, err error, r *Registration, id uuid.UUID) {
	h.emit(&Event{Kind: EventPanic, Task: r, InstanceID: id, Err: err, Where: where})
}

// problem reports what the host could not do (EventProblem).
func (h *Host) problem(what string, err error, r *Registration, id uuid.UUID) {
	h.emit(&Event{Kind: EventProblem, Task: r, InstanceID: id, Err: err, Where: what})
}

// Ensure registers b unless a registration with b's Name and TaskEntryPoint exists, as one
// restored from the store does (see [WithStore]); it is how a program that restarts finds
// its registrations again without restarting their countdowns. If one exists with the same
// trigger settings, conditions, CancelOnConditionLoss and MaxExecutionTime, Ensure returns
// it unchanged (a time trigger keeps its countdown) and binds b.Trigger to it, so that
// b.Trigger's Request fires it, in place of the trigger it had: that one's Request no
// longer fires it (with no other registration, it answers DisabledByPolicy). So two parts
// of a program that Ensure one registration share one trigger value, or the last one's
// wins. If it exists with other settings, Ensure updates it in place: same TaskID and
// LastResult; a time trigger's countdown restarts only if FreshnessTime changed. Several
// matches are an error wrapping [ErrInvalidArgument]. Ensures of one Name and
// TaskEntryPoint take turns, so that concurrent ones register it once; an Unregister
// that races with an Ensure comes before it or after it. The other errors are Register's;
// an Ensure that fails to store an update returns the registration, unchanged, with the
// error.
func (h *Host) Ensure(b Builder) (*Registration, error) {
	task, set, err := h.check(b)
	if err != nil {
		return nil, err
	}
	defer h.ensuringTurn(ensureKey{b.Name, b.TaskEntryPoint})()
	for {
		var matches []*Registration
		h.lock()
		for _, r := range h.regs {
			if r.name == b.Name && r.entryPoint == b.TaskEntryPoint {
				matches = append(matches, r)
			}
		}
		h.unlock()
		switch len(matches) {
		case 0:
			return h.Register(b)
		case 1:
			err := h.update(matches[0], b, task, set)
			if err == errUnregisteredMeanwhile {
				continue // Unregister came first: register it anew
			}
			return matches[0], err
		}
		return nil, invalidf("Ensure", "%d registrations are named %q with entry point %q", len(matches), b.Name, b.TaskEntryPoint)
	}
}

// ensureKey is what Ensure finds a registration by.
type ensureKey struct{ name, entryPoint string }

// ensuringTurn waits until no other Ensure of key runs, and returns the func that ends
// this one's turn.
func (h *Host) ensuringTurn(key ensureKey) (done func()) {
	h.lock()
	for {
		busy, ok := h.ensuring[key]
		if !ok {
			break
		}
		h.unlock()
		<-busy
		h.lock()
	}
	if h.ensuring == nil {
		h.ensuring = make(map[ensureKey]chan struct{})
	}
	turn := make(chan struct{})
	h.ensuring[key] = turn
	h.unlock()
	return func() {
		h.lock()
		delete(h.ensuring, key)
		h.unlock()
		close(turn)
	}
}

// errUnregisteredMeanwhile says that the registration update was to change was
// unregistered while update stored it: Ensure starts again.
var errUnregisteredMeanwhile = errors.New("bgtask: unregistered meanwhile")

// update makes r what b describes, for Ensure.
func (h *Host) update(r *Registration, b Builder, task BackgroundTask, set triggerSettings) error {
	next := h.newRegistration(b, task, set)
	h.lock()
	same := r.sameSettingsLocked(next)
	next.id, next.last = r.id, r.last
	if same || next.kind == timeKind && r.kind == timeKind && next.sched.period == r.sched.period {
		next.sched.next = r.sched.next // the countdown goes on
	}
	if !same {
		if h.closed {
			h.unlock()
			return ErrHostClosed
		}
		r.updating = true // see saver.flush
		h.updates.add(1)
		defer h.updated(r)
	}
	h.unlock()
	if err := h.store(next, b, set); err != nil {
		return err
	}
	h.lock()
	if r.unregistered {
		// Unregister came while next's record was written, and may have deleted the
		// record before: delete it again, and let Ensure register b anew.
		closed := h.closed
		h.unlock()
		if next.persistent {
			if err := h.saver.commit(context.Background(), nil, []uuid.UUID{r.id}); err != nil {
				return fmt.Errorf("bgtask: registration %q: deleting it again: %w", b.Name, err)
			}
		}
		if closed {
			return ErrHostClosed
		}
		return errUnregisteredMeanwhile
	}
	if same {
		h.rebindLocked(r, b.Trigger, task)
		h.restoreCountdownLocked(r, next)
		h.unlock()
		return nil
	}
	h.unlock()
	if old := h.watchConditions(r, next.conditions); old != nil { // user code: outside the lock
		h.lib.Go(r, func(j *job) { r.unwatch(j, old) })
	}
	h.lock()
	defer h.unlock()
	switch {
	case h.closed:
		return ErrHostClosed
	case r.unregistered: // after its record was written: this Ensure came first
		return nil
	}
	// The countdown goes on from where it is now, not from where it was when Ensure read
	// it: the registration may have fired since, and that slot must not come due again.
	goesOn := next.kind == timeKind && r.kind == timeKind && next.sched.period == r.sched.period
	r.trigger.detach(r)
	r.trigger, r.task = next.trigger, next.task
	r.cancelOnLoss, r.maxExec, r.kind, r.oneShot, r.sysType, r.watch = next.cancelOnLoss, next.maxExec, next.kind, next.oneShot, next.sysType, next.watch
	r.persistent = next.persistent
	if !goesOn {
		r.sched.period, r.sched.next = next.sched.period, next.sched.next
	}
	// A time trigger waits for its instance to be retired, but for one whose fires go to
	// the dispatcher: an instance run here (RunInstance) does not hold its schedule.
	if r.running == nil && !r.held || r.kind != timeKind || h.dispatched(r) {
		r.trigger.attach(r)
	}
	if h.stream.wants(EventUpdated) {
		h.emitLocked(Event{Kind: EventUpdated, Task: r})
	}
	return nil
}

// updated ends update's change of r: r is written again as it now is, with its new
// settings if they were applied, its old ones if not. While update ran, background writes
// left r out (see saver.flush): they would have written its old settings over the record
// update wrote.
func (h *Host) updated(r *Registration) {
	h.lock()
	defer h.unlock()
	r.updating = false
	h.updates.add(-1)
	if r.persistent && !r.unregistered {
		h.saver.markDirty(r)
	}
}

// sameSettingsLocked reports whether r and next have the same trigger settings, conditions,
// CancelOnConditionLoss and MaxExecutionTime.
func (r *Registration) sameSettingsLocked(next *Registration) bool {
	return r.kind == next.kind && r.oneShot == next.oneShot && r.sched.period == next.sched.period &&
		r.sysType == next.sysType && r.cancelOnLoss == next.cancelOnLoss && r.maxExec == next.maxExec &&
		slices.EqualFunc(r.conditions, next.conditions, sameCondition)
}

// sameCondition reports whether a and b are the same condition: equal values of a
// comparable type. A comparable type may hold a value that is not (an interface field
// holding a slice): == then panics, and they are taken as different.
func sameCondition(a, b Condition) (same bool) {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	if ta != tb || !ta.Comparable() {
		return false
	}
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

// restoreCountdownLocked has r written to the store again if its countdown moved after
// update stored the record of stored: r's new settings, with the countdown as Ensure
// first read it.
func (h *Host) restoreCountdownLocked(r, stored *Registration) {
	if r.persistent && r.sched.next != stored.sched.next {
		h.saver.markDirty(r)
	}
}

// rebindLocked makes t r's trigger, keeping r's place in the scheduler: the trigger has the
// settings r was registered with.
func (h *Host) rebindLocked(r *Registration, t Trigger, task BackgroundTask) {
	r.task = task
	if old, ok := r.trigger.(*ApplicationTrigger); ok && old != t {
		old.detach(r)
	}
	if nt, ok := t.(*ApplicationTrigger); ok && nt != r.trigger {
		nt.attach(r)
	}
	r.trigger = t
}

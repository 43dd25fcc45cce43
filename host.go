package bgtask

import (
	"bytes"
	"cmp"
	"errors"
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
//  3. The leaves, which take no other lock: endingList.mu, ApplicationTrigger.mu,
//     tracker.mu, subscribers.mu, eventQueue.mu, Switch.mu.
//
// Hot paths take none of them: SetProgress, GetDeferral and Complete use atomics.

// Host runs registered tasks: it owns their triggers, applies its [Policy], tracks every
// running instance and shuts down gracefully. A Host is safe for concurrent use; the zero
// value is not usable: hosts come from [NewHost]. A host starts no goroutine of its own
// until something needs one, and [Host.Shutdown] stops and joins all of them.
type Host struct {
	policy  Policy
	log     *slog.Logger
	entries map[string]BackgroundTask
	sites   bool      // WithDeferralSites
	lib     tracker   // the library's goroutines: event delivery, handlers, the scheduler
	epoch   time.Time // for the monotonic clock of the scheduler and idle detection
	memory  memoryWatch

	mu       sync.Mutex
	regs     map[uuid.UUID]*Registration
	closed   bool
	insts    instList  // started and not ended, or terminated with goroutines left
	live     countdown // instances started and not ended
	seq      uint64    // hold order
	ids      idPool
	held     map[*Registration]uint64 // registrations with a held fire, and when it was held
	slots    []*Registration          // held fires waiting only for a MaxConcurrent slot, oldest first
	toLaunch []*instance              // started under the lock, launched by unlock
	ending   endingList               // instances that ended, to retire (see retire)
	retired  []*instance              // retired or dropped under the lock: unlock raises their events
	lost     []InstanceInfo           // instances terminated during Shutdown
	system   map[SystemTriggerType][]*Registration
	sched    *scheduler // time triggers; nil until the first is registered
	pause    pauseState
	sysState map[SystemConditionType]bool
	sysWatch map[SystemConditionType]*subscribers[func()]
}

// NewHost returns a host configured by opts, or the first option's error.
func NewHost(opts ...Option) (*Host, error) {
	h := &Host{
		log:     slog.Default(),
		entries: make(map[string]BackgroundTask),
		regs:    make(map[uuid.UUID]*Registration),
		held:    make(map[*Registration]uint64),
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
		oneShot:      set.oneShot,
		sysType:      set.sysType,
		watch:        set.watch,
	}
	r.sched.period, r.sched.index = int64(set.period), -1
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
	case isNilTask(b.Task) && b.TaskEntryPoint == "":
		return nil, set, errorf(ErrNoTask, subject, "")
	case b.MaxExecutionTime < 0:
		return nil, set, invalidf(subject, "MaxExecutionTime is negative (%v)", b.MaxExecutionTime)
	}
	set = b.Trigger.settings()
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
	if isNilTask(task) {
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

// isNilTask reports whether t is nil or holds a nil pointer or func, which Run could only
// panic on.
func isNilTask(t BackgroundTask) bool { return isNil(t) }

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

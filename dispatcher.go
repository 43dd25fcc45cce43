package bgtask

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// The seam for running fires elsewhere: a Dispatcher takes the fires of persistent
// registrations (to a queue that any process of a fleet may take them from; module
// bgtaskriver has one on River and Postgres), and RunInstance runs one of them here, under
// every rule of the host. Without a dispatcher nothing in this file runs.

// Dispatcher takes the fires of a host's persistent registrations (see [WithStore]) on an
// [ApplicationTrigger] or a [TimeTrigger], to run them wherever it decides, rather than
// starting them in this process. Whoever takes a fire runs it with [Host.RunInstance].
type Dispatcher interface {
	// Dispatch is called for each fire of r, with details an *ApplicationTriggerDetails
	// (from Request or RequestAndWait) or a *TimeTriggerDetails (from the scheduler, once
	// per time of r's grid that came, or once for those missed while the host was down).
	// It answers as Request would: Allowed when it took the fire, CurrentlyRunning when
	// r's instance is queued or running, so that the fire is one too many. When wait is
	// set (RequestAndWait), it returns once the fire was run, with its outcome.
	//
	// It is called with no lock of the library held, on the goroutine that fired for a
	// Request (its caller's), and for time fires on goroutines of the host: the time
	// fires that come due together are handed over at once, up to 64 at a time, each on
	// a goroutine of its own, so that the dispatcher may take them together, and
	// Dispatch must be safe for concurrent use. It may block; the host's later time fires
	// wait until every Dispatch of the time fires before them has returned. An error
	// makes Request return it; for a time fire it is logged (EventProblem), and the time
	// counts as missed. A panic is recovered, logged (EventPanic) and returned as the
	// error. Suspension is the local host's: a fire made while it is suspended is still
	// handed over, for another process to run, and so is a time that came before
	// Shutdown, while Shutdown runs.
	// A OneShot registration is unregistered when its instance starts, by RunInstance in
	// the process that runs it, so that the process that takes the fire still knows the
	// registration; once Dispatch answered Allowed or CurrentlyRunning to one of its
	// fires, the dispatching host refuses the next ones itself (DisabledByPolicy).
	Dispatch(ctx context.Context, r *Registration, details any, wait bool) (CompletedEventArgs, ApplicationTriggerResult, error)
}

// WithDispatcher hands the fires of persistent registrations on an ApplicationTrigger or a
// TimeTrigger to d (see [Dispatcher]); other triggers (SystemTrigger, CustomTrigger) still
// start instances here, as do registrations with only a Task. It requires [WithStore]
// (NewHost fails without it): every process that takes the fires must know the
// registrations.
//
// With a dispatcher, the registrations it takes are the same in every process that names
// them alike: a registration's TaskID is derived from its Name and TaskEntryPoint, so that
// Ensure of the same Builder in several processes over one store names one registration,
// and Register of a Builder whose name and entry point are taken is an error. A time
// trigger's grid starts at the Unix epoch (its times are the multiples of FreshnessTime
// since 1970-01-01 UTC), so that every process agrees on its times without talking to the
// others. [Registration.LastResult] of a registration the dispatcher takes is this
// process's last result, and is not written to the store: the dispatcher has the fleet's.
// Default: none.
func WithDispatcher(d Dispatcher) Option {
	return Option{func(h *Host) error {
		if isNil(d) {
			return invalidf("WithDispatcher", "nil dispatcher")
		}
		h.dispatcher = d
		return nil
	}}
}

// Dispatcher returns the dispatcher the host was made with ([WithDispatcher]), or nil, so
// that a dispatcher can tell its own host from another.
func (h *Host) Dispatcher() Dispatcher { return h.dispatcher }

// ErrHeld is matched by the error of [Host.RunInstance] when the instance cannot start
// now: the error is a [*HeldError] saying why. The fire is not lost: whoever holds it
// tries again later.
var ErrHeld = errors.New("bgtask: held")

// HeldError says why [Host.RunInstance] could not start an instance. It matches ErrHeld.
type HeldError struct {
	By HeldBy
}

func (e *HeldError) Error() string        { return "bgtask: held: " + e.By.String() }
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// fleetNamespace names the TaskIDs derived from a name and an entry point.
var fleetNamespace = uuid.MustParse("6f1c3f0e-9a4b-4f7e-8d2a-0b6c5e7d9a31")

// dispatched reports whether r's fires go to the dispatcher.
func (h *Host) dispatched(r *Registration) bool {
	return h.dispatcher != nil && r.persistent && (r.kind == timeKind || r.kind == applicationKind)
}

// fleetIdentity gives r, about to be stored, the TaskID and grid it has in every process
// with a dispatcher (see WithDispatcher). It fails if another registration of this host has
// that TaskID.
func (h *Host) fleetIdentity(r *Registration) error {
	if h.dispatcher == nil {
		return nil
	}
	r.id = uuid.NewSHA1(fleetNamespace, []byte(r.name+"\x00"+r.entryPoint))
	if p := r.sched.period; p > 0 {
		now := time.Now().UnixNano()
		r.sched.next = int64(time.Unix(0, now-now%p+p).Sub(h.epoch))
	}
	h.lock()
	defer h.unlock()
	if _, taken := h.regs[r.id]; taken {
		return invalidf("Register", "registration %q with entry point %q exists: use Ensure", r.name, r.entryPoint)
	}
	return nil
}

// dispatch hands a fire to the dispatcher, answering as fire does; call runs the program's
// code (Dispatch), so that a panic in it is recovered, and named on a library goroutine.
// Once the dispatcher took a OneShot registration's fire, further fires here are refused:
// it is unregistered when its instance starts (RunInstance), wherever that is.
func (h *Host) dispatch(ctx context.Context, r *Registration, details any, waiter chan<- CompletedEventArgs, call func(func()) error) (ApplicationTriggerResult, error) {
	// A time fire the scheduler took before Shutdown is handed over still: its time is
	// spent here, and the store says so.
	_, timeFire := details.(*TimeTriggerDetails)
	h.lock()
	refused := h.closed && !timeFire || r.unregistered || r.spent
	h.unlock()
	if refused {
		return DisabledByPolicy, nil
	}
	var out CompletedEventArgs
	res, err := UnknownError, error(nil)
	if perr := call(func() { out, res, err = h.dispatcher.Dispatch(ctx, r, details, waiter != nil) }); perr != nil {
		h.logPanic(inDispatch, perr, r, uuid.Nil)
		return UnknownError, perr
	}
	if err != nil {
		return UnknownError, err
	}
	if res == Allowed || res == CurrentlyRunning {
		h.lock()
		r.spent = r.oneShot // the fleet has its one fire
		h.unlock()
	}
	if res == Allowed && waiter != nil {
		waiter <- out // it has room for it
	}
	return res, nil
}

// callHere runs f on the calling goroutine, the program's own (Request's).
func callHere(f func()) error { return capture(func() error { f(); return nil }) }

// dispatchTimes hands the time fires the scheduler collected in one pass to the
// dispatcher, each on a goroutine of its own, so that the dispatcher may take them
// together: bgtaskriver inserts the fires that wait at once in one round trip, and the
// instances of 1,000 time triggers due at one instant started within 442–452 ms of their
// time this way, 1,094–1,153 ms with one Dispatch at a time (its
// BenchmarkFleetTimeTriggersDueAtOnce). It returns once every Dispatch has returned, so
// that a registration's later times are handed over after its earlier ones, or when the
// scheduler stops: a Dispatch may call Shutdown, which waits for the scheduler.
func (h *Host) dispatchTimes(fires []timeFire) {
	var left atomic.Int32
	left.Store(int32(len(fires)))
	done := make(chan struct{})
	for _, f := range fires {
		h.lib.Go(nil, func(j *job) {
			defer func() { // also on runtime.Goexit in Dispatch
				if left.Add(-1) == 0 {
					close(done)
				}
			}()
			call := func(g func()) error { return callUser(j, &inDispatch, g) }
			if _, err := h.dispatch(context.Background(), f.r, f.details, nil, call); err != nil {
				h.problem("dispatching a time fire failed", err, f.r, uuid.Nil)
			}
		})
	}
	select {
	case <-done:
	case <-h.sched.stop:
	}
}

// dispatchLocked takes r's time fire, for the latest time of its grid that came, for
// the dispatcher, and puts r back on the schedule: nothing of it runs here in between.
func (s *scheduler) dispatchLocked(h *Host, r *Registration) {
	if r.oneShot {
		// It fires once (see dispatch). Its record is left as it is, for the process that
		// runs the fire to delete: written here, it could come back after that delete.
		at, _ := r.latestSlotLocked()
		r.sched.next = math.MaxInt64
		s.dispatch = append(s.dispatch, timeFire{r, &TimeTriggerDetails{ScheduledAt: h.epoch.Add(time.Duration(at))}})
		return
	}
	details := r.catchUpLocked(nil).(*TimeTriggerDetails)
	s.dispatch = append(s.dispatch, timeFire{r, details})
	s.add(r)
}

// timeFire is a time fire of a dispatched registration, to hand to the dispatcher once
// the lock is released.
type timeFire struct {
	r       *Registration
	details *TimeTriggerDetails
}

// RunInstance runs one instance of r in this process, with id as its InstanceID and details
// as its TriggerDetails, under every rule of the host: its policy, time limits, grace
// period, idle timeout, suspension, deferrals, events and result (LastResult, Completed
// handlers, the event stream). Run is called on a goroutine of its own, as for any fire;
// RunInstance blocks its caller until the instance has finished or been terminated, and
// returns its CompletedEventArgs then. It does not wait for the Completed handlers.
//
// When ctx is done the instance is canceled, with the reason of ctx's cause when that is a
// [*CanceledError] (see [context.WithCancelCause]), else with Abort; RunInstance then
// still waits for the instance to end, within the grace period. A ctx done before the
// call starts nothing and returns ctx's error. A OneShot registration is unregistered when
// the instance starts, as for any fire; with a store, its record is deleted when the
// instance ends, unless it ended canceled with Terminating: this process is going away,
// and the fire may run again in another, which must find the registration.
//
// It does not start the instance, and returns an error matching [ErrHeld], when a fire of
// r would be held here: r's instance is running, the host is suspended, a condition of r
// does not hold, or [Policy].MaxConcurrent instances run. Its other errors match
// [ErrHostClosed], or [ErrInvalidArgument] for a nil ctx, a registration of another host
// or one unregistered, or a nil id. The caller chooses id: two instances running with the
// same id would be told apart by nothing but their registrations. It is how a
// [Dispatcher]'s taker runs the fires it took, and it works without a dispatcher too.
func (h *Host) RunInstance(ctx context.Context, r *Registration, id uuid.UUID, details any) (CompletedEventArgs, error) {
	switch {
	case ctx == nil:
		return CompletedEventArgs{}, invalidf("RunInstance", "nil context")
	case r == nil || r.host != h:
		return CompletedEventArgs{}, invalidf("RunInstance", "registration of another host")
	case id == uuid.Nil:
		return CompletedEventArgs{}, invalidf("RunInstance", "nil instance id")
	case ctx.Err() != nil:
		return CompletedEventArgs{}, ctx.Err()
	}
	waiter := make(chan CompletedEventArgs, 1)
	h.lock()
	i, err := h.runLocked(r, id, details, waiter)
	once := r.oneShot && r.persistent // read under the lock: Ensure may change them
	h.unlock()
	if err != nil {
		return CompletedEventArgs{}, err
	}
	stop := context.AfterFunc(ctx, func() { i.cancel(reasonOf(ctx)) })
	defer stop()
	out := <-waiter
	if once && !(out.Canceled && out.Reason == Terminating) {
		h.saver.deleteLater(r.id) // see runLocked
	}
	return out, nil
}

// runLocked starts RunInstance's instance, if nothing holds it; unlock launches it.
func (h *Host) runLocked(r *Registration, id uuid.UUID, details any, waiter chan<- CompletedEventArgs) (*instance, error) {
	switch {
	case h.closed:
		return nil, ErrHostClosed
	case r.unregistered:
		return nil, invalidf("RunInstance", "registration %q unregistered", r.name)
	case r.running != nil:
		return nil, &HeldError{HeldByRunning}
	case h.suspendedLocked():
		return nil, &HeldError{HeldBySuspension}
	case !r.conditionsHoldLocked():
		return nil, &HeldError{HeldByConditions}
	case h.policy.MaxConcurrent > 0 && h.live.n >= h.policy.MaxConcurrent:
		return nil, &HeldError{HeldByConcurrency}
	}
	i := h.newInstanceLocked(r, details, id)
	i.waiters = []chan<- CompletedEventArgs{waiter}
	if r.oneShot {
		// Unregistered here at once. Its record is deleted when the instance ends (see
		// RunInstance), but not if it ends canceled with Terminating: this process is
		// going away, and the dispatcher may run the fire again in another process,
		// which must find the registration.
		h.unregisterLocked(r, Abort)
	}
	return i, nil
}

// reasonOf is the cancellation reason ctx's cause gives: its own when it is a
// *CanceledError, else Abort.
func reasonOf(ctx context.Context) CancellationReason {
	var ce *CanceledError
	if errors.As(context.Cause(ctx), &ce) {
		return ce.Reason
	}
	return Abort
}

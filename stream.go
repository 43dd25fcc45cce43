package bgtask

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// EventKind says what an [Event] reports.
type EventKind uint8

const (
	// EventRegistered: Task was registered (by Register, Ensure, or restored by NewHost).
	EventRegistered EventKind = iota + 1
	// EventUnregistered: Task was unregistered.
	EventUnregistered
	// EventHeld: a fire of Task was accepted but cannot start yet; Held says why. A held
	// fire waits for one thing at a time, the one Held names: when that lets go, the fire
	// starts (EventLaunched), is reported again held by the next thing that holds it, or
	// is dropped (EventCompleted with a zero Result.Started). What changes meanwhile
	// (a condition that stops holding while the fire waits for a MaxConcurrent slot) is
	// seen then.
	EventHeld
	// EventLaunched: instance InstanceID of Task started; Run is about to be called.
	EventLaunched
	// EventCanceled: instance InstanceID was canceled with Reason.
	EventCanceled
	// EventCompleted: the instance finished, or a held fire was dropped; Result is its
	// Completed event's argument. Every accepted fire ends in exactly one.
	EventCompleted
	// EventTerminated: the instance's grace period passed; Result.Err is the
	// [*TerminatedError], saying what was left. EventCompleted follows.
	EventTerminated
	// EventSuspended: the host was suspended, by [Host.Suspend] or, when ByMemory, by
	// memory pressure (Heap and Limit are the reading).
	EventSuspended
	// EventResumed: the suspension by [Host.Resume] or, when ByMemory, by memory pressure
	// ended. The host stays suspended while the other lasts.
	EventResumed
	// EventRevoked: memory pressure canceled instance InstanceID (EventCanceled, with
	// ResourceRevocation, comes before it).
	EventRevoked
	// EventPanic: a panic in the program's code was recovered: Err is the [*PanicError],
	// Where names the code. A panic in Run or in a Go func is also the instance's result.
	EventPanic
	// EventStoreError: a write to the [Store] failed; Err says why. Background writes are
	// retried.
	EventStoreError
	// EventProblem: something the host could not do, other than the above: Where says
	// what, Err why when there is an error.
	EventProblem
	// EventUpdated: Ensure changed Task's settings in place (its trigger, conditions,
	// CancelOnConditionLoss or MaxExecutionTime). An Ensure that changes nothing reports
	// nothing.
	EventUpdated

	// For the log's masks only (see Event.bits):
	eventDropped      // an EventCompleted of a dropped fire
	eventPressure     // an EventSuspended by memory pressure
	eventPressureOver // an EventResumed by memory pressure
)

var eventKindNames = [...]string{
	EventRegistered: "Registered", EventUnregistered: "Unregistered", EventHeld: "Held",
	EventLaunched: "Launched", EventCanceled: "Canceled", EventCompleted: "Completed",
	EventTerminated: "Terminated", EventSuspended: "Suspended", EventResumed: "Resumed",
	EventRevoked: "Revoked", EventPanic: "Panic", EventStoreError: "StoreError",
	EventProblem: "Problem", EventUpdated: "Updated",
}

func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventKindNames) && eventKindNames[k] != "" {
		return eventKindNames[k]
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// HeldBy says what holds a fire that was accepted (see [EventHeld]).
type HeldBy uint8

const (
	HeldByRunning     HeldBy = iota + 1 // the registration's instance is running
	HeldBySuspension                    // the host is suspended
	HeldByConditions                    // a condition does not hold
	HeldByConcurrency                   // [Policy].MaxConcurrent instances are running
)

func (b HeldBy) String() string {
	switch b {
	case HeldByRunning:
		return "running"
	case HeldBySuspension:
		return "suspended"
	case HeldByConditions:
		return "conditions"
	case HeldByConcurrency:
		return "concurrency"
	}
	return "HeldBy(" + strconv.Itoa(int(b)) + ")"
}

// Event is one thing that happened in a host, as [Host.Subscribe] delivers it. Which
// fields are set depends on Kind (see each kind).
type Event struct {
	Kind       EventKind
	Time       time.Time
	Task       *Registration // nil for the host's own events
	InstanceID uuid.UUID
	Reason     CancellationReason // EventCanceled, EventRevoked; EventCompleted, EventTerminated: Result.Reason
	Held       HeldBy             // EventHeld
	Result     CompletedEventArgs // EventCompleted, EventTerminated
	Err        error              // EventPanic, EventStoreError, EventProblem
	Where      string             // EventPanic, EventProblem
	ByMemory   bool               // EventSuspended, EventResumed
	Heap       uint64             // EventSuspended and EventResumed when ByMemory, EventRevoked
	Limit      uint64             // likewise: the memory limit
	// Missed counts the events this subscriber missed right after this one, because it
	// had fallen 65,536 events behind.
	Missed uint64
}

// maxQueued is how many events a subscriber may fall behind before events are dropped
// for it (and counted in Event.Missed): a subscriber that stops must not grow the heap
// without bound.
const maxQueued = 1 << 16

// Subscribe calls f with every event of the given kinds, or of every kind when none is
// given, and returns a func that stops it. It is the host's one event stream: its log
// (see [WithLogger]) and package bgtaskhttp read it too.
//
// f is called on a goroutine of the library, one event at a time, in the order the events
// happened, whatever goroutines caused them: an instance's Launched, Canceled, Revoked,
// Terminated and Completed come in that order; an instance's Completed comes before the
// Launched of an instance its end let start (a fire held while it ran, a MaxConcurrent
// slot it freed); and Suspended and Resumed alternate for each cause (ByMemory tells the
// program's Suspend from memory pressure). It never blocks a task or the host: f may
// block, which delays only its own events. They queue meanwhile, up to 65,536; beyond that
// they are dropped, and the last event queued before them says how many in Missed. A
// panic in f is recovered and logged. stop drops the events not yet delivered and does
// not wait for a call under way; Shutdown waits for the events queued before it returns,
// and once it has returned nil, nothing more is delivered (a Shutdown cut short by its ctx
// leaves the stream open: the instances it abandoned still report).
// With no subscriber, and a log that records only problems, an event costs one atomic load
// where it happens.
func (h *Host) Subscribe(f func(Event), kinds ...EventKind) (stop func()) {
	if f == nil {
		return func() {}
	}
	s := &sink{host: h, f: f, mask: maskOf(kinds)}
	h.stream.add(s)
	return func() { h.stream.remove(s) }
}

func maskOf(kinds []EventKind) uint32 {
	if len(kinds) == 0 {
		return allEvents
	}
	var m uint32
	for _, k := range kinds {
		if k < EventRegistered || k > EventUpdated {
			continue // not a kind: nothing to deliver
		}
		m |= 1 << k
		if k == EventCompleted {
			m |= 1 << eventDropped
		}
	}
	return m
}

const allEvents = 1<<(EventUpdated+1) - 2 | 1<<eventDropped

// stream is the host's event stream: its subscribers and the log.
type stream struct {
	mask    atomic.Uint32 // the kinds anyone wants: the log's and every sink's
	closed  atomic.Bool   // Shutdown has returned: nothing more is sent
	logMask uint32        // set by NewHost
	log     *slog.Logger
	mu      sync.Mutex
	sinks   atomic.Pointer[[]*sink]
}

func (s *stream) wants(k EventKind) bool { return s.mask.Load()&(1<<k) != 0 }

func (s *stream) add(k *sink) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := append(slices.Clone(s.load()), k) // copied: deliveries read the old one unlocked
	s.sinks.Store(&list)
	s.mask.Store(s.mask.Load() | k.mask)
}

func (s *stream) remove(k *sink) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var list []*sink
	mask := s.logMask
	for _, x := range s.load() {
		if x != k {
			list = append(list, x)
			mask |= x.mask
		}
	}
	k.stopped.Store(true)
	s.sinks.Store(&list)
	s.mask.Store(mask)
}

func (s *stream) load() []*sink {
	if p := s.sinks.Load(); p != nil {
		return *p
	}
	return nil
}

// emit sends e to every subscriber that wants it, then to the log. It must be called with
// no lock of the library held, as the log's handler is the program's code: under a lock,
// send now and log after.
func (h *Host) emit(e *Event) {
	h.send(e)
	if h.stream.logs(e) {
		h.logEvent(e)
	}
}

// bits are the kinds e counts as, for the masks: a dropped fire's EventCompleted is also
// an eventDropped.
func (e *Event) bits() uint32 {
	switch {
	case e.Kind == EventCompleted:
		return completedBits(&e.Result)
	case e.Kind == EventSuspended && e.ByMemory:
		return 1<<EventSuspended | 1<<eventPressure
	case e.Kind == EventResumed && e.ByMemory:
		return 1<<EventResumed | 1<<eventPressureOver
	}
	return 1 << e.Kind
}

// completedBits are the bits of the EventCompleted of a fire that ended with res.
func completedBits(res *CompletedEventArgs) uint32 {
	if dropped(res) {
		return 1<<EventCompleted | 1<<eventDropped
	}
	return 1 << EventCompleted
}

// dropped reports whether res is the result of a fire dropped before it started, not of an
// instance launched and terminated before its goroutine called Run (whose Started is zero
// too).
func dropped(res *CompletedEventArgs) bool {
	return res.Started.IsZero() && !errors.Is(res.Err, ErrTerminated)
}

func (s *stream) logs(e *Event) bool { return s.logMask&e.bits() != 0 }

// send queues e for every subscriber that wants it. It takes only leaf locks, so that it
// may be called with the host's or an instance's lock held: events are sent there, under
// the lock that orders what they report (Launched before Canceled before Completed, and
// an instance's Completed before the Launched of what its end let start; Suspended and
// Resumed alternating), and logged after. After Shutdown has returned, nothing is sent:
// no goroutine is started for it.
func (h *Host) send(e *Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if h.stream.closed.Load() {
		return
	}
	for _, s := range h.stream.load() {
		if s.mask&e.bits() != 0 {
			s.queue(e)
		}
	}
}

// emitTerminated emits the EventTerminated of instance i, whose result is res. It keeps
// the Event out of the frame of terminate, whose goroutine may go on to call the
// program's handlers (see retireHere).
//
//go:noinline
func (h *Host) emitTerminated(i *instance, res *CompletedEventArgs) {
	h.emit(&Event{Kind: EventTerminated, Task: i.reg, InstanceID: i.id, Reason: res.Reason, Result: *res})
}

// sendCanceled sends i's EventCanceled and returns it, for the log.
func (h *Host) sendCanceled(i *instance, reason CancellationReason) *Event {
	e := &Event{Kind: EventCanceled, Task: i.reg, InstanceID: i.id, Reason: reason}
	h.send(e)
	return e
}

// logAll logs the events sent under the lock; kept out of unlock's frame, as emitTerminated
// is.
//
//go:noinline
func (h *Host) logAll(events []Event) {
	for k := range events {
		h.logEvent(&events[k])
	}
}

// emitLocked sends e, with the host's lock held, and leaves it to unlock to log. The log
// is held for (tracker.hold) until unlock has written it, so that Shutdown waits for it.
func (h *Host) emitLocked(e Event) {
	h.send(&e)
	if h.stream.logs(&e) {
		*h.logSlotLocked() = e
	}
}

// logSlotLocked returns a new slot at the end of the events that unlock logs, and holds
// for their log from the first one on (see emitLocked).
func (h *Host) logSlotLocked() *Event {
	if h.events == nil {
		h.lib.hold()
	}
	h.events = slices.Grow(h.events, 1)[:len(h.events)+1]
	return &h.events[len(h.events)-1]
}

// sendCompletedLocked sends i's EventCompleted, and leaves it to unlock to log. The event
// is built where it is queued, field by field, not on the stack: a goroutine retires its
// instance with its first stack nearly used up, and a copy of the Event there made it grow
// (BenchmarkInstanceEndToEndSubscribed, three runs each: 4.6–4.9 µs per instance with a
// copy on the stack, 2.7–3.3 µs this way, and 2.9–3.6 µs in the same runs when the event
// was sent after the unlock, out of order with the next instance's Launched).
func (h *Host) sendCompletedLocked(i *instance) {
	res := i.result.Load()
	bits := completedBits(res)
	now := time.Now()
	if !h.stream.closed.Load() {
		for _, s := range h.stream.load() {
			if s.mask&bits != 0 && s.addCompleted(i, res, now) {
				h.lib.Go(nil, s.drain)
			}
		}
	}
	if h.stream.logMask&bits != 0 {
		h.logSlotLocked().setCompleted(i, res, now)
	}
}

// setCompleted makes e the EventCompleted of i, which ended with res.
//
//go:noinline
func (e *Event) setCompleted(i *instance, res *CompletedEventArgs, t time.Time) {
	*e = Event{} // zeroed in place
	e.Kind, e.Time, e.Task, e.InstanceID, e.Reason = EventCompleted, t, i.reg, i.id, res.Reason
	e.Result = *res
}

// sink is one subscriber: its queue, drained by one goroutine of the library at a time,
// which exits when the queue is empty, so that an idle subscriber costs no goroutine.
type sink struct {
	host     *Host
	f        func(Event)
	mask     uint32
	stopped  atomic.Bool
	mu       sync.Mutex
	items    []Event
	spare    []Event // a delivered batch's array, for the next batch to reuse
	draining bool
}

func (s *sink) queue(e *Event) {
	s.mu.Lock()
	if p := s.slotLocked(); p != nil {
		*p = *e
	}
	start := s.startLocked()
	s.mu.Unlock()
	if start {
		s.host.lib.Go(nil, s.drain)
	}
}

// addCompleted queues the EventCompleted of i (see Host.sendCompletedLocked), and reports
// whether the caller is to start a goroutine to deliver it.
func (s *sink) addCompleted(i *instance, res *CompletedEventArgs, t time.Time) (start bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.slotLocked(); p != nil {
		p.setCompleted(i, res, t)
	}
	return s.startLocked()
}

// slotLocked returns a new slot at the end of the queue, or nil when the queue is full:
// the last event queued then counts one more missed.
func (s *sink) slotLocked() *Event {
	if len(s.items) >= maxQueued {
		s.items[len(s.items)-1].Missed++ // the last one queued says what followed it
		return nil
	}
	if s.items == nil {
		s.items, s.spare = s.spare, nil
	}
	s.items = slices.Grow(s.items, 1)[:len(s.items)+1]
	return &s.items[len(s.items)-1]
}

// startLocked reports whether the caller is to start a goroutine to deliver the queue:
// none delivers it.
func (s *sink) startLocked() bool {
	start := !s.draining
	s.draining = true
	return start
}

var inSubscriber = "Subscribe func"

// drain delivers the queued events until the queue is empty. If f calls
// runtime.Goexit, the deferred call hands the rest to a new goroutine.
func (s *sink) drain(j *job) {
	var batch []Event
	k := 0
	defer func() {
		if k < len(batch) { // runtime.Goexit in f: go on elsewhere
			s.requeue(batch[k+1:])
		}
	}()
	for {
		if batch = s.next(batch); batch == nil {
			return
		}
		for k = 0; k < len(batch); k++ {
			if s.stopped.Load() || s.host.stream.closed.Load() {
				break // stopped, or Shutdown has returned (see Host.Shutdown)
			}
			e := &batch[k]
			if err := callUser(j, &inSubscriber, func() { s.f(*e) }); err != nil {
				// To the log only: a subscriber that panics at each event must not feed itself.
				if s.host.stream.logMask&(1<<EventPanic) != 0 {
					s.host.logEvent(&Event{Kind: EventPanic, Time: time.Now(), Err: err, Where: inSubscriber})
				}
			}
		}
		k = len(batch)
	}
}

// next keeps done, the batch just delivered, for a later batch to reuse, and returns the
// queued events, or nil when there are none, and then the caller stops draining. Reusing
// the arrays saves an allocation per batch (BenchmarkInstanceEndToEndSubscribed:
// 1,035–1,094 B per instance, against 1,890–2,050 B when each batch was a new array); a
// large one is let go, so that a burst does not keep its memory for good.
func (s *sink) next(done []Event) []Event {
	clear(done) // let go of what the events point to
	s.mu.Lock()
	defer s.mu.Unlock()
	if done != nil && cap(done) <= 1024 && s.spare == nil {
		s.spare = done[:0]
	}
	if len(s.items) == 0 || s.stopped.Load() {
		s.draining = false
		if s.stopped.Load() {
			s.items, s.spare = nil, nil
		}
		return nil
	}
	batch := s.items
	s.items = nil
	return batch
}

// requeue puts back events not delivered, first, and starts a goroutine to deliver them.
func (s *sink) requeue(rest []Event) {
	s.mu.Lock()
	s.items = append(rest, s.items...)
	s.mu.Unlock()
	s.host.lib.Go(nil, s.drain)
}

// The log reads the stream too: lifecycle events at Debug, problems at Warn or Error.
// Which kinds it wants is decided once, by NewHost, from the levels its handler enables,
// so that a log that records only problems costs nothing on the hot paths.

// logLevels is the lowest level each kind is logged at (see logEvent).
var logLevels = [...]slog.Level{
	EventRegistered: slog.LevelDebug, EventUnregistered: slog.LevelDebug,
	EventHeld: slog.LevelDebug, EventLaunched: slog.LevelDebug, EventCanceled: slog.LevelDebug,
	EventCompleted: slog.LevelDebug, EventTerminated: slog.LevelWarn,
	EventSuspended: slog.LevelDebug, EventResumed: slog.LevelDebug, EventRevoked: slog.LevelWarn,
	EventPanic: slog.LevelError, EventStoreError: slog.LevelError, EventProblem: slog.LevelWarn,
	EventUpdated: slog.LevelDebug,
	eventDropped: slog.LevelWarn, eventPressure: slog.LevelWarn, eventPressureOver: slog.LevelInfo,
}

// setLog sets the log and what it wants from the stream: the kinds logged at a level its
// handler enables.
func (s *stream) setLog(l *slog.Logger) {
	s.log = l
	s.logMask = 0
	for k, level := range logLevels {
		if k > 0 && l.Enabled(context.Background(), level) {
			s.logMask |= 1 << k
		}
	}
	s.mask.Store(s.logMask)
}

// logEvent writes e to the log.
func (h *Host) logEvent(e *Event) {
	level, msg := slog.LevelDebug, ""
	var attrs []any
	if e.Task != nil {
		attrs = append(attrs, slog.String("task", e.Task.name))
	}
	if e.InstanceID != uuid.Nil {
		attrs = append(attrs, slog.String("instance", e.InstanceID.String()))
	}
	switch e.Kind {
	case EventRegistered:
		msg = "registered"
	case EventUnregistered:
		msg = "unregistered"
	case EventUpdated:
		msg = "updated"
	case EventHeld:
		msg = "fire held"
		attrs = append(attrs, slog.String("by", e.Held.String()))
	case EventLaunched:
		msg = "instance launched"
	case EventCanceled:
		msg = "instance canceled"
		attrs = append(attrs, slog.String("reason", e.Reason.String()))
	case EventCompleted:
		msg = "instance completed"
		if dropped(&e.Result) {
			level, msg = slog.LevelWarn, "fire dropped"
		}
		attrs = append(attrs, slog.Bool("canceled", e.Result.Canceled))
		if e.Result.Canceled {
			attrs = append(attrs, slog.String("reason", e.Result.Reason.String()))
		}
		if !e.Result.Started.IsZero() {
			attrs = append(attrs, slog.Duration("duration", e.Result.Finished.Sub(e.Result.Started)))
		}
	case EventTerminated:
		level, msg = slog.LevelWarn, "instance terminated"
	case EventSuspended:
		msg = "host suspended"
		if e.ByMemory {
			level, msg = slog.LevelWarn, "memory pressure: host suspended"
		}
	case EventResumed:
		msg = "host resumed"
		if e.ByMemory {
			level, msg = slog.LevelInfo, "memory pressure over: host resumed"
		}
	case EventRevoked:
		level, msg = slog.LevelWarn, "memory pressure: instance revoked"
	case EventPanic:
		level, msg = slog.LevelError, "panic in "+e.Where+" recovered"
	case EventStoreError:
		level, msg = slog.LevelError, "store write failed; retrying"
	case EventProblem:
		level, msg = slog.LevelWarn, e.Where
	}
	if e.ByMemory || e.Kind == EventRevoked {
		attrs = append(attrs, slog.Uint64("heap", e.Heap), slog.Uint64("limit", e.Limit))
	}
	attrs = append(attrs, errAttrs(e)...)
	h.stream.log.Log(context.Background(), level, "bgtask: "+msg, attrs...)
}

// errAttrs are the attributes of e's error: Err, or the result's.
func errAttrs(e *Event) []any {
	err := e.Err
	if e.Kind == EventCompleted || e.Kind == EventTerminated {
		err = e.Result.Err
	}
	if err == nil {
		return nil
	}
	if pe, ok := err.(*PanicError); ok && e.Kind == EventPanic {
		return []any{slog.String("panic", pe.Error()), slog.String("stack", string(pe.Stack))}
	}
	return []any{slog.String("err", err.Error())}
}

package bgtask

import (
	"github.com/google/uuid"

	"strconv"
	"sync"
	"sync/atomic"
)

// Condition is a state that must hold for a registration's task to start (see
// Builder.Conditions). The library's conditions are [SystemCondition] and [*Switch]; a
// program writes its own by implementing both methods.
//
// The host never polls a condition: it reads Satisfied when the registration is made and
// each time the condition reports, through the changed func given to Watch, that its
// value may have changed.
type Condition interface {
	// Satisfied reports whether the condition holds now, for the host h that the
	// registration belongs to. It is called on the goroutine that called changed (or
	// Register) and must not block.
	Satisfied(h *Host) bool
	// Watch arranges for changed to be called, from any goroutine, each time Satisfied
	// may have changed, until stop is called. changed calls Satisfied and takes the host's
	// lock briefly: call it without holding a lock that Satisfied needs. Watch is called
	// once per registration, by Register, on its goroutine; stop once, by Unregister or
	// Shutdown, on a goroutine of the library. A panic in any of the three is recovered
	// and logged.
	Watch(h *Host, changed func()) (stop func())
}

// Switch is a [Condition] the program flips with Set. It is safe for concurrent use; its
// zero value is a usable condition that does not hold.
type Switch struct {
	mu       sync.Mutex
	on       bool
	watchers watchSet
}

// String describes the condition: "Switch", and whether it holds.
func (s *Switch) String() string {
	if s.Satisfied(nil) {
		return "Switch (on)"
	}
	return "Switch (off)"
}

// NewCondition returns a Switch that starts as satisfied says.
func NewCondition(satisfied bool) *Switch { return &Switch{on: satisfied} }

// Set sets whether the condition holds. When that changes it, the hosts of every
// registration using the switch are told before Set returns: held fires may start, and
// instances registered with CancelOnConditionLoss are canceled when it stops holding.
// Set does not wait for the started or canceled instances.
func (s *Switch) Set(satisfied bool) {
	s.mu.Lock()
	var notify []func()
	if s.on != satisfied {
		notify = s.watchers.list()
	}
	s.on = satisfied
	s.mu.Unlock()
	for _, f := range notify {
		f()
	}
}

// watchSet is the set of funcs watching a condition. Many registrations may watch one
// condition, so adding and removing are O(1) (a copy-on-write list, as for event
// handlers, made registering 10,000 registrations on one condition quadratic). Its owner's
// lock guards it; its zero value is an empty set.
type watchSet map[*func()]struct{}

// add adds f; remove, called with the owner's lock held, takes it out.
func (w *watchSet) add(f func()) *func() {
	if *w == nil {
		*w = make(watchSet)
	}
	p := &f
	(*w)[p] = struct{}{}
	return p
}

// list returns the funcs, to call once the owner's lock is released.
func (w watchSet) list() []func() {
	fs := make([]func(), 0, len(w))
	for p := range w {
		fs = append(fs, *p)
	}
	return fs
}

// Satisfied reports the value last Set.
func (s *Switch) Satisfied(*Host) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.on
}

// Watch calls changed on each change made by Set, on Set's goroutine.
func (s *Switch) Watch(_ *Host, changed func()) (stop func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.watchers.add(changed)
	return func() {
		s.mu.Lock()
		delete(s.watchers, p)
		s.mu.Unlock()
	}
}

// SystemConditionType is a system state that a [SystemCondition] requires. The values are
// those of the Windows SystemConditionType enumeration.
type SystemConditionType int

// The system condition types. Until [Host.SetCondition] says otherwise, the positive ones
// hold (UserPresent, InternetAvailable, SessionConnected, FreeNetworkAvailable,
// BackgroundWorkCostNotHigh) and their negations do not.
const (
	SystemConditionUserPresent               SystemConditionType = 1
	SystemConditionUserNotPresent            SystemConditionType = 2
	SystemConditionInternetAvailable         SystemConditionType = 3
	SystemConditionInternetNotAvailable      SystemConditionType = 4
	SystemConditionSessionConnected          SystemConditionType = 5
	SystemConditionSessionDisconnected       SystemConditionType = 6
	SystemConditionFreeNetworkAvailable      SystemConditionType = 7
	SystemConditionBackgroundWorkCostNotHigh SystemConditionType = 8
)

var systemConditionNames = [...]string{"", "UserPresent", "UserNotPresent", "InternetAvailable",
	"InternetNotAvailable", "SessionConnected", "SessionDisconnected", "FreeNetworkAvailable",
	"BackgroundWorkCostNotHigh"}

// String returns the type's name without its prefix, such as "InternetAvailable", or
// "SystemConditionType(N)" for a value that is not one of the constants.
func (c SystemConditionType) String() string {
	if c.valid() {
		return systemConditionNames[c]
	}
	return "SystemConditionType(" + strconv.Itoa(int(c)) + ")"
}

func (c SystemConditionType) valid() bool {
	return c >= SystemConditionUserPresent && c <= SystemConditionBackgroundWorkCostNotHigh
}

// negation returns the type that always has the opposite value, if c has one.
func (c SystemConditionType) negation() (SystemConditionType, bool) {
	if c > SystemConditionSessionDisconnected {
		return 0, false
	}
	if c%2 == 1 {
		return c + 1, true
	}
	return c - 1, true
}

// SystemCondition is a [Condition] on the system state of the host it is registered
// with, set by [Host.SetCondition]. It is used as a plain value.
type SystemCondition struct {
	Type SystemConditionType
}

// String returns the condition's type, such as "InternetAvailable".
func (c SystemCondition) String() string { return c.Type.String() }

// Satisfied reports whether the condition holds on h.
func (c SystemCondition) Satisfied(h *Host) bool {
	h.lock()
	defer h.unlock()
	return h.systemConditionLocked(c.Type)
}

// Watch calls changed after each [Host.SetCondition] on h that changes the condition,
// on the goroutine that called SetCondition.
func (c SystemCondition) Watch(h *Host, changed func()) (stop func()) {
	h.lock()
	defer h.unlock()
	if h.sysWatch == nil {
		h.sysWatch = make(map[SystemConditionType]watchSet)
	}
	set := h.sysWatch[c.Type]
	p := set.add(changed)
	h.sysWatch[c.Type] = set
	return func() {
		h.lock()
		delete(h.sysWatch[c.Type], p)
		h.unlock()
	}
}

func (h *Host) systemConditionLocked(c SystemConditionType) bool {
	if v, ok := h.sysState[c]; ok {
		return v
	}
	negative := c <= SystemConditionSessionDisconnected && c%2 == 0
	return !negative
}

// SetCondition sets whether the system condition c holds on this host, and its negation
// (UserPresent and UserNotPresent, InternetAvailable and InternetNotAvailable,
// SessionConnected and SessionDisconnected) to the opposite. Registrations waiting on it
// start or, with CancelOnConditionLoss, are canceled before SetCondition returns;
// SetCondition does not wait for those instances. A type that is not one of the
// constants is logged and otherwise ignored.
func (h *Host) SetCondition(c SystemConditionType, satisfied bool) {
	if !c.valid() {
		h.problem("SetCondition with an unknown type ignored", invalidf("SetCondition", "unknown type %s", c), nil, uuid.Nil)
		return
	}
	h.lock()
	if h.sysState == nil {
		h.sysState = make(map[SystemConditionType]bool)
	}
	var notify []func()
	set := func(c SystemConditionType, v bool) {
		if h.systemConditionLocked(c) != v {
			notify = append(notify, h.sysWatch[c].list()...)
		}
		h.sysState[c] = v
	}
	set(c, satisfied)
	if n, ok := c.negation(); ok {
		set(n, !satisfied)
	}
	h.unlock()
	for _, f := range notify {
		f()
	}
}

// condState is a registration's view of its conditions, kept by the host.
type condState struct {
	conds []Condition     // as registered
	stops []func()        // from Watch; called once, by unwatch
	gen   []atomic.Uint64 // per condition: readings started
	// Guarded by the host's lock.
	applied []uint64 // per condition: the reading in force
	ok      []bool   // per condition: its value in that reading
	unmet   int      // how many of ok are false
}

// watchConditions subscribes to conds for r, makes them r's conditions and reads them
// once. It runs user code, so the host's lock is not held. It returns the subscriptions to
// the conditions r had before, if any, for the caller to end.
func (h *Host) watchConditions(r *Registration, conds []Condition) (old *condState) {
	var cs *condState
	if n := len(conds); n > 0 {
		cs = &condState{
			conds:   conds,
			gen:     make([]atomic.Uint64, n),
			applied: make([]uint64, n),
			ok:      make([]bool, n),
			unmet:   n, // nothing holds until it has been read
			stops:   make([]func(), n),
		}
		for k, c := range conds {
			var stop func()
			if err := capture(func() error { stop = c.Watch(h, func() { h.conditionChanged(r, cs, k) }); return nil }); err != nil {
				h.logPanic("Condition.Watch", err, r, uuid.Nil)
			}
			cs.stops[k] = stop
		}
	}
	h.lock()
	old, r.cond, r.conditions = r.cond, cs, conds
	h.unlock()
	for k := range conds {
		h.conditionChanged(r, cs, k)
	}
	return old
}

// unwatch ends the condition subscriptions cs, on job j; Unregister and Shutdown call it
// once.
func (r *Registration) unwatch(j *job, cs *condState) {
	var stops []*subscriber[func()]
	for _, stop := range cs.stops {
		if stop != nil {
			stops = append(stops, &subscriber[func()]{f: stop})
		}
	}
	callEach(r.host, j, &inConditionStop, stops, nil, true, func(stop func()) { stop() })
}

// conditionChanged reads condition k of cs, r's conditions, and applies the reading.
// Readings are numbered before they are taken, so that of two concurrent ones the later
// reading wins whatever order they reach the lock in. A reading of conditions that r no
// longer has (Ensure changed them) is dropped.
func (h *Host) conditionChanged(r *Registration, cs *condState, k int) {
	gen := cs.gen[k].Add(1)
	var ok bool
	if err := capture(func() error { ok = cs.conds[k].Satisfied(h); return nil }); err != nil {
		h.logPanic("Condition.Satisfied", err, r, uuid.Nil)
	}
	h.lock()
	if gen <= cs.applied[k] || r.unregistered || r.cond != cs {
		h.unlock()
		return
	}
	cs.applied[k] = gen
	was := cs.ok[k]
	cs.ok[k] = ok
	var lost *instance
	switch {
	case ok && !was:
		cs.unmet--
		h.tryStartLocked(r)
	case !ok && was:
		cs.unmet++
		if r.cancelOnLoss {
			lost = r.running
		}
	}
	h.unlock()
	if lost != nil {
		lost.cancel(ConditionLoss)
	}
}

func (r *Registration) conditionsHoldLocked() bool { return r.cond == nil || r.cond.unmet == 0 }

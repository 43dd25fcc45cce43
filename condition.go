package bgtask

import (
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
	// once per registration, by Register; stop, by Unregister or Shutdown.
	Watch(h *Host, changed func()) (stop func())
}

// Switch is a [Condition] the program flips with Set. It is safe for concurrent use; its
// zero value is a usable condition that does not hold.
type Switch struct {
	mu       sync.Mutex
	on       bool
	watchers map[*func()]struct{}
}

// NewCondition returns a Switch that starts as satisfied says.
func NewCondition(satisfied bool) *Switch { return &Switch{on: satisfied} }

// Set sets whether the condition holds. When that changes it, the hosts of every
// registration using the switch are told before Set returns: held fires may start, and
// instances registered with CancelOnConditionLoss are canceled when it stops holding.
// Set does not wait for the started or canceled instances.
func (s *Switch) Set(satisfied bool) {
	s.mu.Lock()
	if s.on == satisfied {
		s.mu.Unlock()
		return
	}
	s.on = satisfied
	notify := make([]func(), 0, len(s.watchers))
	for f := range s.watchers {
		notify = append(notify, *f)
	}
	s.mu.Unlock()
	for _, f := range notify {
		f()
	}
}

// Satisfied reports the value last Set.
func (s *Switch) Satisfied(*Host) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.on
}

// Watch calls changed on each change made by Set, on Set's goroutine.
func (s *Switch) Watch(_ *Host, changed func()) (stop func()) {
	p := &changed
	s.mu.Lock()
	if s.watchers == nil {
		s.watchers = make(map[*func()]struct{})
	}
	s.watchers[p] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.watchers, p)
		s.mu.Unlock()
	}
}

// condState is a registration's view of its conditions, kept by the host.
type condState struct {
	stops []func()        // from Watch; called once, by unwatch
	gen   []atomic.Uint64 // per condition: readings started
	// Guarded by the host's lock.
	applied []uint64 // per condition: the reading in force
	ok      []bool   // per condition: its value in that reading
	unmet   int      // how many of ok are false
}

// watchConditions subscribes to r's conditions and reads them once. It runs user code, so
// the host's lock is not held.
func (h *Host) watchConditions(r *Registration) {
	n := len(r.conditions)
	if n == 0 {
		return
	}
	r.cond = &condState{
		gen:     make([]atomic.Uint64, n),
		applied: make([]uint64, n),
		ok:      make([]bool, n),
		unmet:   n, // nothing holds until it has been read
		stops:   make([]func(), n),
	}
	for k, c := range r.conditions {
		stop := func() {}
		if err := protect(func() error { stop = c.Watch(h, func() { h.conditionChanged(r, k) }); return nil }); err != nil {
			h.logPanic("Condition.Watch", err, r.attrs()...)
		}
		if stop == nil {
			stop = func() {}
		}
		r.cond.stops[k] = stop
	}
	for k := range r.conditions {
		h.conditionChanged(r, k)
	}
}

// unwatch ends r's condition subscriptions; Unregister and Shutdown call it, once.
func (r *Registration) unwatch() {
	if r.cond == nil {
		return
	}
	for _, stop := range r.cond.stops {
		_ = protect(func() error { stop(); return nil })
	}
}

// conditionChanged reads condition k of r and applies the reading. Readings are numbered
// before they are taken, so that of two concurrent ones the later reading wins whatever
// order they reach the lock in.
func (h *Host) conditionChanged(r *Registration, k int) {
	gen := r.cond.gen[k].Add(1)
	var ok bool
	if err := protect(func() error { ok = r.conditions[k].Satisfied(h); return nil }); err != nil {
		h.logPanic("Condition.Satisfied", err, r.attrs()...)
	}
	h.lock()
	if gen <= r.cond.applied[k] || r.unregistered {
		h.unlock()
		return
	}
	r.cond.applied[k] = gen
	was := r.cond.ok[k]
	r.cond.ok[k] = ok
	var lost *instance
	switch {
	case ok && !was:
		r.cond.unmet--
		if r.cond.unmet == 0 {
			h.dispatchLocked()
		}
	case !ok && was:
		r.cond.unmet++
		if r.cancelOnLoss {
			lost = r.running
		}
	}
	h.unlock()
	if lost != nil {
		lost.cancel(ConditionLoss)
	}
}

func (h *Host) conditionsHoldLocked(r *Registration) bool { return r.cond == nil || r.cond.unmet == 0 }

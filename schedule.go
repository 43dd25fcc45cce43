package bgtask

import (
	"runtime"
	"time"
)

// TimeTrigger starts its registrations' tasks every FreshnessTime, the first time
// FreshnessTime after Register. Fires stay on that grid: each is scheduled from the
// previous scheduled time, not from when the last run happened, so no drift accumulates.
// Fires missed while the registration's instance was running, the host was suspended or
// a condition did not hold coalesce into one catch-up fire, which starts as soon as the
// registration is free, with ScheduledAt the latest missed time: never a storm, never an
// overlap.
//
// All time triggers of a host are scheduled by one goroutine of the host, with one timer:
// a registered time trigger costs no goroutine and no timer of its own.
//
// Register reads the fields; changing them later does not change the registrations made.
type TimeTrigger struct {
	// FreshnessTime is the period. It must be positive and at least [Policy].MinFreshness.
	FreshnessTime time.Duration
	// OneShot fires once: the registration is unregistered when that instance starts.
	OneShot bool
}

func (t *TimeTrigger) validate(p *Policy) error {
	if t.FreshnessTime <= 0 || t.FreshnessTime < p.minFreshness() {
		return &freshnessError{got: t.FreshnessTime, min: p.minFreshness()}
	}
	return nil
}

type freshnessError struct{ got, min time.Duration }

func (e *freshnessError) Error() string {
	return ErrInvalidFreshness.Error() + ": " + e.got.String() + ", the minimum is " + e.min.String()
}

func (e *freshnessError) Is(target error) bool { return target == ErrInvalidFreshness }

func (t *TimeTrigger) oneShot() bool { return t.OneShot }
func (t *TimeTrigger) isNil() bool   { return t == nil }

func (t *TimeTrigger) attach(r *Registration) {
	h := r.host
	if h.sched == nil {
		h.sched = newScheduler()
		h.lib.Go(func() { h.sched.loop(h) })
	}
	period := int64(t.FreshnessTime)
	r.sched = schedState{next: h.now() + period, period: period}
	h.sched.add(r)
}

func (t *TimeTrigger) detach(r *Registration) {
	if r.sched.index >= 0 {
		r.host.sched.remove(r)
	}
}

// schedState is a registration's place in the scheduler; guarded by the host's lock.
// Times are on the host's monotonic clock (Host.now), in nanoseconds.
type schedState struct {
	next   int64 // the next scheduled fire
	period int64
	index  int32 // in scheduler.due; -1 when not there
}

// scheduler keeps the time-triggered registrations in a min-heap of their next fire and
// one goroutine waits for the earliest. The heap is guarded by the host's lock.
type scheduler struct {
	due  []*Registration // a binary min-heap on sched.next
	wake chan struct{}   // the earliest fire changed; buffered, never blocks the sender
	stop chan struct{}   // closed by Shutdown
}

func newScheduler() *scheduler {
	return &scheduler{wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

func (s *scheduler) add(r *Registration) {
	r.sched.index = int32(len(s.due))
	s.due = append(s.due, r)
	s.up(len(s.due) - 1)
	if r.sched.index == 0 {
		s.poke()
	}
}

func (s *scheduler) remove(r *Registration) {
	k := int(r.sched.index)
	last := len(s.due) - 1
	if k != last {
		s.swap(k, last)
	}
	s.due[last] = nil
	s.due = s.due[:last]
	r.sched.index = -1
	if k != last {
		s.fix(k)
	}
}

// fix restores the heap order after the registration at k changed its next fire.
func (s *scheduler) fix(k int) {
	if !s.down(k) {
		s.up(k)
	}
}

func (s *scheduler) less(a, b int) bool { return s.due[a].sched.next < s.due[b].sched.next }

func (s *scheduler) swap(a, b int) {
	s.due[a], s.due[b] = s.due[b], s.due[a]
	s.due[a].sched.index = int32(a)
	s.due[b].sched.index = int32(b)
}

func (s *scheduler) up(k int) {
	for k > 0 {
		parent := (k - 1) / 2
		if !s.less(k, parent) {
			return
		}
		s.swap(k, parent)
		k = parent
	}
}

// down moves the element at k down and reports whether it moved.
func (s *scheduler) down(k int) bool {
	start := k
	for {
		child := 2*k + 1
		if child >= len(s.due) {
			break
		}
		if right := child + 1; right < len(s.due) && s.less(right, child) {
			child = right
		}
		if !s.less(child, k) {
			break
		}
		s.swap(k, child)
		k = child
	}
	return k > start
}

func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// loop is the scheduler goroutine: it sleeps until the earliest fire, fires what is due
// and goes back to sleep, until the host shuts down.
func (s *scheduler) loop(h *Host) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		h.lock()
		s.fireDueLocked(h, h.now())
		wait, any := s.untilNextLocked(h)
		h.unlock()
		if any && wait <= 0 {
			runtime.Gosched() // let the batch just launched run before firing the next
			continue          // more are due: the batch was full
		}
		if any {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-timer.C:
		case <-s.wake:
		case <-s.stop:
			return
		}
	}
}

// fireBatch is how many registrations the scheduler fires per hold of the host's lock.
// Many triggers due at once are fired in batches, each launched before the next is
// fired, so that the first instances run on one core while the scheduler fires the next
// batch on the other, and Requests and finishing instances get the lock in between.
const fireBatch = 64

// fireDueLocked fires up to fireBatch registrations due by now. A registration several
// periods behind (the scheduler could not run in time) fires once, for the latest slot it
// missed.
func (s *scheduler) fireDueLocked(h *Host, now int64) {
	for n := 0; n < fireBatch && len(s.due) > 0 && s.due[0].sched.next <= now; n++ {
		r := s.due[0]
		st := &r.sched
		at := st.next + (now-st.next)/st.period*st.period
		st.next = at + st.period
		if r.oneShot {
			s.remove(r)
		} else {
			s.fix(0)
		}
		h.fireLocked(r, &TimeTriggerDetails{ScheduledAt: h.epoch.Add(time.Duration(at))}, false)
	}
}

func (s *scheduler) untilNextLocked(h *Host) (time.Duration, bool) {
	if len(s.due) == 0 {
		return 0, false
	}
	return time.Duration(s.due[0].sched.next - h.now()), true
}

// stopSchedulerLocked ends the scheduler goroutine; Shutdown calls it once.
func (h *Host) stopSchedulerLocked() {
	if h.sched != nil {
		close(h.sched.stop)
	}
}

package bgtask

import (
	"container/heap"
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
	r.sched = schedState{next: time.Now().Add(t.FreshnessTime), period: t.FreshnessTime, oneShot: t.OneShot}
	h.sched.add(r)
}

func (t *TimeTrigger) detach(r *Registration) {
	if r.sched.index >= 0 {
		r.host.sched.remove(r)
	}
}

// schedState is a registration's place in the scheduler; guarded by the host's lock.
type schedState struct {
	next    time.Time // the next scheduled fire
	period  time.Duration
	index   int // in scheduler.due; -1 when not there
	oneShot bool
}

// scheduler keeps the time-triggered registrations in a min-heap of their next fire and
// one goroutine waits for the earliest. The heap is guarded by the host's lock.
type scheduler struct {
	due  dueHeap
	wake chan struct{} // the earliest fire changed; buffered, never blocks the sender
	stop chan struct{} // closed by Shutdown
}

func newScheduler() *scheduler {
	return &scheduler{wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

func (s *scheduler) add(r *Registration) {
	heap.Push(&s.due, r)
	if r.sched.index == 0 {
		s.poke()
	}
}

func (s *scheduler) remove(r *Registration) {
	heap.Remove(&s.due, r.sched.index)
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
		h.mu.Lock()
		started := s.fireDueLocked(h, time.Now())
		wait, any := s.untilNextLocked()
		h.mu.Unlock()
		h.launchAll(started)
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

// fireDueLocked fires every registration due by now. A registration several periods
// behind (the scheduler could not run in time) fires once, for the latest slot it missed.
func (s *scheduler) fireDueLocked(h *Host, now time.Time) []*instance {
	var started []*instance
	for len(s.due) > 0 && !s.due[0].sched.next.After(now) {
		r := s.due[0]
		st := &r.sched
		missed := now.Sub(st.next) / st.period
		at := st.next.Add(missed * st.period)
		st.next = at.Add(st.period)
		if st.oneShot {
			heap.Pop(&s.due)
		} else {
			heap.Fix(&s.due, 0)
		}
		if _, i := h.fireLocked(r, &TimeTriggerDetails{ScheduledAt: at}, false); i != nil {
			started = append(started, i)
		}
	}
	return started
}

func (s *scheduler) untilNextLocked() (time.Duration, bool) {
	if len(s.due) == 0 {
		return 0, false
	}
	return time.Until(s.due[0].sched.next), true
}

// dueHeap orders registrations by their next fire; it implements heap.Interface.
type dueHeap []*Registration

func (d dueHeap) Len() int           { return len(d) }
func (d dueHeap) Less(a, b int) bool { return d[a].sched.next.Before(d[b].sched.next) }
func (d dueHeap) Swap(a, b int) {
	d[a], d[b] = d[b], d[a]
	d[a].sched.index = a
	d[b].sched.index = b
}

func (d *dueHeap) Push(x any) {
	r := x.(*Registration)
	r.sched.index = len(*d)
	*d = append(*d, r)
}

func (d *dueHeap) Pop() any {
	old := *d
	r := old[len(old)-1]
	old[len(old)-1] = nil
	r.sched.index = -1
	*d = old[:len(old)-1]
	return r
}

// stopSchedulerLocked ends the scheduler goroutine; Shutdown calls it once.
func (h *Host) stopSchedulerLocked() {
	if h.sched != nil {
		close(h.sched.stop)
	}
}

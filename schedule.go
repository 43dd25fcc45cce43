package bgtask

import (
	"runtime"
	"time"
)

// The scheduler of time triggers: one goroutine of the host and one timer wait for the
// earliest next fire of a min-heap of registrations. A registration leaves the heap when it
// fires, and comes back when its instance is retired (rescheduleLocked): while it runs or
// its fire is held, nothing is scheduled for it, and the fires it misses meanwhile are one
// catch-up fire, for the latest slot missed (catchUpLocked). All of it is guarded by the
// host's lock. Times are on the host's monotonic clock (Host.now), in nanoseconds.

// schedState is a registration's place in the scheduler.
type schedState struct {
	next   int64 // the earliest slot of the grid not yet fired
	period int64 // 0 for a registration that is not time-triggered
	index  int32 // in scheduler.due; -1 when not there
}

type scheduler struct {
	due  []*Registration // a binary min-heap on sched.next
	wake chan struct{}   // the earliest fire changed; buffered, never blocks the sender
	// dispatch are the time fires for the Dispatcher, handed to it once the lock is free.
	dispatch []timeFire
	stop     chan struct{} // closed by Shutdown
}

func newScheduler() *scheduler {
	return &scheduler{wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

// now is the host's monotonic clock, in nanoseconds since NewHost.
func (h *Host) now() int64 { return int64(time.Since(h.epoch)) }

// loop is the scheduler goroutine: it sleeps until the earliest fire, fires what is due
// and goes back to sleep, until the host shuts down.
func (s *scheduler) loop(h *Host) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer h.endBurst() // also when Shutdown stops it mid-burst
	for {
		h.lock()
		s.fireDueLocked(h, h.now())
		wait, any := s.untilNextLocked(h)
		dispatch := s.dispatch
		s.dispatch = nil
		// In a burst, retirement waits for its end (see endingList); not while a Dispatch,
		// which is user code and may block, is called.
		h.ending.waiting.Store(any && wait <= 0 && dispatch == nil)
		h.unlock() // and, at the end of a burst, retires the instances that ended in it
		if dispatch != nil {
			h.dispatchTimes(dispatch)
			select {
			case <-s.stop:
				return
			default:
				continue // the wait above is stale by the time the Dispatches took
			}
		}
		switch {
		case !any:
			timer.Stop()
		case wait <= 0: // more are due: the batch was full
			select {
			case <-s.stop:
				return
			default:
				// Let the instances just launched run before firing the next batch: the
				// p99 of BenchmarkTimeTriggersDueAtOneInstant is 11.7–12.0 ms this way,
				// 21.8–22.8 ms without (runtime timers: 12.1–12.2 ms).
				runtime.Gosched()
				continue
			}
		default:
			timer.Reset(wait)
		}
		select {
		case <-timer.C:
		case <-s.wake:
		case <-s.stop:
			return
		}
	}
}

// endBurst retires the instances that ended while the scheduler fired a burst, when it
// stops in the middle of one.
func (h *Host) endBurst() {
	if h.ending.waiting.Swap(false) {
		h.lock()
		h.unlock()
	}
}

// fireBatch is how many registrations the scheduler fires per hold of the host's lock, so
// that Requests and finishing instances get the lock in between, and the instances fired
// are launched (by unlock) before the next batch.
const fireBatch = 64

// fireDueLocked fires up to fireBatch registrations due by now and takes them out of the
// heap until they are retired. Each instance starts for the latest slot of its grid that
// has come when it starts (catchUpLocked): a fire held meanwhile starts for a later slot.
func (s *scheduler) fireDueLocked(h *Host, now int64) {
	for n := 0; n < fireBatch && len(s.due) > 0 && s.due[0].sched.next <= now; n++ {
		r := s.due[0]
		s.remove(r)
		if h.dispatched(r) {
			s.dispatchLocked(h, r)
			continue
		}
		h.fireLocked(r, nil, false, nil) // startLocked reads the slot (catchUpLocked)
	}
}

// catchUpLocked returns the details of r's time fire, for the latest slot of its grid that
// has come, and moves r past it. details is returned as it is if no slot came since the
// last fire.
func (r *Registration) catchUpLocked(details any) any {
	at, came := r.latestSlotLocked()
	if !came {
		return details
	}
	r.sched.next = addSat(at, r.sched.period)
	if r.persistent {
		r.host.saver.markDirty(r)
	}
	return &TimeTriggerDetails{ScheduledAt: r.host.epoch.Add(time.Duration(at))}
}

// latestSlotLocked returns the latest slot of r's grid that has come, if one came since
// the last fire.
func (r *Registration) latestSlotLocked() (at int64, came bool) {
	st, now := &r.sched, r.host.now()
	if st.next > now {
		return 0, false
	}
	return st.next + (now-st.next)/st.period*st.period, true
}

// rescheduleLocked puts a time-triggered registration back on the schedule once it is free:
// it fires at once if a slot came while it was busy, else it waits in the heap.
func (h *Host) rescheduleLocked(r *Registration) {
	if r.sched.period == 0 || r.sched.index >= 0 || r.unregistered || h.closed || r.running != nil || r.held {
		return
	}
	if r.sched.next <= h.now() {
		h.fireLocked(r, nil, false, nil) // startLocked reads the slot (catchUpLocked)
		return
	}
	h.sched.add(r)
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

// The heap, with each registration's index kept so that it is removed in O(log n).

func (s *scheduler) add(r *Registration) {
	r.sched.index = int32(len(s.due))
	s.due = append(s.due, r)
	s.up(len(s.due) - 1)
	if r.sched.index == 0 {
		select { // tell the goroutine of the new earliest fire
		case s.wake <- struct{}{}:
		default:
		}
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
	if k != last && !s.down(k) {
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

package bgtask_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"pgregory.net/rapid"

	"github.com/bgtask-go/bgtask"
)

// regSpec describes a registration of the scheduler property test: a time trigger with
// a period in seconds, or a system trigger of a type; with or without the shared condition;
// and how long its instances run.
type regSpec struct {
	period  int // seconds; 0 for a system trigger
	sysType bgtask.SystemTriggerType
	useCond bool
	secs    []int // seconds each instance runs, in turn (the k-th start runs secs[k%len(secs)])
}

// schedAction is one move: sleep, suspend, resume, cond, signal, register, unregister.
type schedAction struct {
	op   string
	n    int  // seconds to sleep; which registration to unregister
	on   bool // cond
	typ  bgtask.SystemTriggerType
	spec regSpec // register
}

var sysTypes = []bgtask.SystemTriggerType{bgtask.SystemTriggerUserPresent, bgtask.SystemTriggerUserAway}

func drawSpec(t *rapid.T) regSpec {
	s := regSpec{useCond: rapid.Bool().Draw(t, "useCond")}
	if rapid.Bool().Draw(t, "timed") {
		s.period = rapid.SampledFrom([]int{2, 3, 5, 7}).Draw(t, "period")
	} else {
		s.sysType = rapid.SampledFrom(sysTypes).Draw(t, "sysType")
	}
	// Instances that outlast one or more periods (or the next signal) exercise the
	// catch-up; 0 returns at once.
	s.secs = rapid.SliceOfN(rapid.IntRange(0, 9), 1, 3).Draw(t, "secs")
	return s
}

func drawActions(t *rapid.T) ([]regSpec, []schedAction) {
	specs := rapid.SliceOfN(rapid.Custom(drawSpec), 1, 4).Draw(t, "specs")
	n := rapid.IntRange(1, 30).Draw(t, "actions")
	acts := make([]schedAction, n)
	for k := range acts {
		a := schedAction{op: rapid.SampledFrom([]string{"sleep", "sleep", "sleep", "suspend", "resume", "cond", "signal", "register", "unregister"}).Draw(t, "op")}
		switch a.op {
		case "sleep":
			a.n = rapid.IntRange(1, 8).Draw(t, "seconds")
		case "cond":
			a.on = rapid.Bool().Draw(t, "on")
		case "signal":
			a.typ = rapid.SampledFrom(sysTypes).Draw(t, "signal")
		case "register":
			a.spec = drawSpec(t)
		case "unregister":
			a.n = rapid.IntRange(0, 7).Draw(t, "which")
		}
		acts[k] = a
	}
	return specs, acts
}

// start is one instance start: when, and the ScheduledAt of its time trigger (0 for a
// system fire), both in seconds since the test began.
type start struct{ at, scheduled time.Duration }

// schedModel predicts every start from the actions. A fire that cannot start (an instance
// of the registration runs, the host is suspended, the condition does not hold) is held,
// and later fires coalesce with it: a time trigger's held fire carries the latest slot
// reached. It starts as soon as nothing holds it: when the instance ends, at Resume, or when
// the condition holds again. The time trigger's grid is never moved: a catch-up fire for
// slot s is followed by the slot after s.
type schedModel struct {
	now       time.Duration
	suspended bool
	cond      bool
	regs      []*modelReg
}

type modelReg struct {
	spec     regSpec
	active   bool
	next     time.Duration // next slot of a time trigger
	held     bool
	heldSlot time.Duration
	running  bool
	endAt    time.Duration // when the running instance returns
	starts   []start
}

func (m *schedModel) blocked(r *modelReg) bool {
	return r.running || m.suspended || r.spec.useCond && !m.cond
}

// fire applies a fire of r with the given slot (0 for a system fire).
func (m *schedModel) fire(r *modelReg, slot time.Duration) {
	if m.blocked(r) {
		r.held, r.heldSlot = true, slot
		return
	}
	m.start(r, slot)
}

// start starts an instance of r for slot; one that runs for no time ends at once.
func (m *schedModel) start(r *modelReg, slot time.Duration) {
	r.held = false
	secs := r.spec.secs[len(r.starts)%len(r.spec.secs)]
	r.starts = append(r.starts, start{m.now, slot})
	r.running, r.endAt = true, m.now+time.Duration(secs)*time.Second
	if secs == 0 {
		m.end(r)
	}
}

// end ends r's running instance: its held fire, if any, starts now if nothing else holds it.
func (m *schedModel) end(r *modelReg) {
	r.running = false
	if r.active && r.held && !m.blocked(r) {
		m.start(r, r.heldSlot)
	}
}

func (m *schedModel) release() {
	for _, r := range m.regs {
		if r.active && r.held && !m.blocked(r) {
			m.start(r, r.heldSlot)
		}
	}
}

func (m *schedModel) add(spec regSpec) {
	m.regs = append(m.regs, &modelReg{spec: spec, active: true, next: m.now + time.Duration(spec.period)*time.Second})
}

// sleep moves the model's clock to now+d, ending instances and firing slots on the way, in
// time order. Registrations do not affect each other, so only one registration's events at
// equal times are ordered: a slot reached as the instance ends is fired first, so that the
// catch-up at that time is for that slot, the latest one reached (the host reads the latest
// slot when the instance is retired).
func (m *schedModel) sleep(d time.Duration) {
	until := m.now + d
	for {
		var ending, due *modelReg
		for _, r := range m.regs {
			if r.running && r.endAt <= until && (ending == nil || r.endAt < ending.endAt) {
				ending = r
			}
			if r.active && r.spec.period > 0 && r.next <= until && (due == nil || r.next < due.next) {
				due = r
			}
		}
		switch {
		case ending != nil && (due == nil || ending.endAt < due.next):
			m.now = ending.endAt
			m.end(ending)
		case due != nil:
			m.now = due.next
			due.next += time.Duration(due.spec.period) * time.Second
			m.fire(due, m.now)
		default:
			m.now = until
			return
		}
	}
}

func (m *schedModel) apply(a schedAction) {
	switch a.op {
	case "sleep":
		m.sleep(time.Duration(a.n) * time.Second)
	case "suspend":
		m.suspended = true
	case "resume":
		m.suspended = false
		m.release()
	case "cond":
		m.cond = a.on
		m.release()
	case "signal":
		for _, r := range m.regs {
			if r.active && r.spec.period == 0 && r.spec.sysType == a.typ {
				m.fire(r, 0)
			}
		}
	case "register":
		m.add(a.spec)
	case "unregister":
		if a.n < len(m.regs) {
			m.regs[a.n].active, m.regs[a.n].held = false, false
		}
	}
}

func TestSchedulerProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		specs, acts := drawActions(rt)
		var failure error
		synctest.Test(t, func(t *testing.T) { failure = runScheduler(specs, acts) })
		if failure != nil {
			rt.Fatal(failure)
		}
	})
}

// runScheduler plays the actions on a real host and on the model and compares every
// registration's starts, each with its ScheduledAt: so a storm (a start per missed slot), an
// overlap (a start before the instance returned), a catch-up that is lost, late or for
// another slot, and a grid that drifts after a catch-up all show as a difference.
func runScheduler(specs []regSpec, acts []schedAction) error {
	h, err := bgtask.NewHost()
	if err != nil {
		return err
	}
	begin := time.Now()
	cond := bgtask.NewCondition(false)
	m := &schedModel{cond: false}
	var (
		mu       sync.Mutex
		got      [][]start
		running  []bool // an instance of the registration is in Run
		overlaps []error
		regs     []*bgtask.Registration
	)
	register := func(spec regSpec) error {
		mu.Lock()
		k := len(got)
		got = append(got, nil)
		running = append(running, false)
		mu.Unlock()
		b := bgtask.Builder{Name: fmt.Sprint(k), Trigger: &bgtask.SystemTrigger{Type: spec.sysType},
			Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
				var slot time.Duration
				if d, ok := inst.TriggerDetails().(*bgtask.TimeTriggerDetails); ok {
					slot = d.ScheduledAt.Sub(begin)
				}
				mu.Lock()
				nth := len(got[k])
				got[k] = append(got[k], start{time.Since(begin), slot})
				if running[k] {
					overlaps = append(overlaps, fmt.Errorf("registration %d %+v: start %d at %v while an instance runs", k, spec, nth, time.Since(begin)))
				}
				running[k] = true
				mu.Unlock()
				defer func() {
					mu.Lock()
					running[k] = false
					mu.Unlock()
				}()
				if secs := spec.secs[nth%len(spec.secs)]; secs > 0 {
					timer := time.NewTimer(time.Duration(secs) * time.Second)
					defer timer.Stop()
					select {
					case <-timer.C:
					case <-ctx.Done(): // Shutdown
					}
				}
				return nil
			})}
		if spec.period > 0 {
			b.Trigger = &bgtask.TimeTrigger{FreshnessTime: time.Duration(spec.period) * time.Second}
		}
		if spec.useCond {
			b.Conditions = []bgtask.Condition{cond}
		}
		r, err := h.Register(b)
		regs = append(regs, r)
		m.add(spec)
		return err
	}
	for _, s := range specs {
		if err := register(s); err != nil {
			return err
		}
	}
	for _, a := range acts {
		switch a.op {
		case "sleep":
			time.Sleep(time.Duration(a.n) * time.Second)
		case "suspend":
			h.Suspend()
		case "resume":
			h.Resume()
		case "cond":
			cond.Set(a.on)
		case "signal":
			h.Signal(a.typ)
		case "register":
			if err := register(a.spec); err != nil {
				return err
			}
			synctest.Wait()
			continue // register applied the model already
		case "unregister":
			if a.n < len(regs) {
				regs[a.n].Unregister(false)
			}
		}
		synctest.Wait()
		m.apply(a)
	}
	if err := h.Shutdown(context.Background()); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	if len(overlaps) > 0 {
		return overlaps[0]
	}
	for k, r := range m.regs {
		if !slices.Equal(got[k], r.starts) {
			return fmt.Errorf("registration %d %+v: starts %v, model %v", k, r.spec, got[k], r.starts)
		}
	}
	return nil
}

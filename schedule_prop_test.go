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
// a period in seconds, or a system trigger of a type; with or without the shared condition.
type regSpec struct {
	period  int // seconds; 0 for a system trigger
	sysType bgtask.SystemTriggerType
	useCond bool
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

// schedModel predicts every start from the actions.
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
	starts   []start
}

func (m *schedModel) blocked(r *modelReg) bool { return m.suspended || r.spec.useCond && !m.cond }

// fire applies a fire of r with the given slot (0 for a system fire).
func (m *schedModel) fire(r *modelReg, slot time.Duration) {
	if m.blocked(r) {
		r.held, r.heldSlot = true, slot
		return
	}
	r.starts = append(r.starts, start{m.now, slot})
}

func (m *schedModel) release() {
	for _, r := range m.regs {
		if r.active && r.held && !m.blocked(r) {
			r.held = false
			r.starts = append(r.starts, start{m.now, r.heldSlot})
		}
	}
}

func (m *schedModel) add(spec regSpec) {
	m.regs = append(m.regs, &modelReg{spec: spec, active: true, next: m.now + time.Duration(spec.period)*time.Second})
}

// sleep moves the model's clock to now+d, firing every slot on the way, in time order.
func (m *schedModel) sleep(d time.Duration) {
	end := m.now + d
	for {
		var due *modelReg
		for _, r := range m.regs {
			if r.active && r.spec.period > 0 && r.next <= end && (due == nil || r.next < due.next) {
				due = r
			}
		}
		if due == nil {
			break
		}
		m.now = due.next
		m.fire(due, due.next)
		due.next += time.Duration(due.spec.period) * time.Second
	}
	m.now = end
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
// registration's starts.
func runScheduler(specs []regSpec, acts []schedAction) error {
	h, err := bgtask.NewHost()
	if err != nil {
		return err
	}
	begin := time.Now()
	cond := bgtask.NewCondition(false)
	m := &schedModel{cond: false}
	var mu sync.Mutex
	var got [][]start
	var regs []*bgtask.Registration
	register := func(spec regSpec) error {
		k := len(got)
		got = append(got, nil)
		b := bgtask.Builder{Name: fmt.Sprint(k), Trigger: &bgtask.SystemTrigger{Type: spec.sysType},
			Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
				var slot time.Duration
				if d, ok := inst.TriggerDetails().(*bgtask.TimeTriggerDetails); ok {
					slot = d.ScheduledAt.Sub(begin)
				}
				mu.Lock()
				got[k] = append(got[k], start{time.Since(begin), slot})
				mu.Unlock()
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
	for k, r := range m.regs {
		if !slices.Equal(got[k], r.starts) {
			return fmt.Errorf("registration %d %+v: starts %v, model %v", k, r.spec, got[k], r.starts)
		}
	}
	return nil
}

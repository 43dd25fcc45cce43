package bgtask_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/bgtask-go/bgtask"
)

// acceptedReg is a registration of the accepted-fires property test: an application
// trigger of its own or a system trigger, with or without the shared switch, and how long
// its instances run, in turn.
type acceptedReg struct {
	system  bool
	sysType bgtask.SystemTriggerType
	useCond bool
	secs    []int // seconds each instance runs, in turn; -1: until canceled
}

// acceptedStep is one move: request, signal, set, unregister, sleep, suspend, resume.
type acceptedStep struct {
	op  string
	n   int  // request, unregister: which registration; sleep: half-seconds
	on  bool // set: the switch's value; unregister: cancelTask
	typ bgtask.SystemTriggerType
}

type acceptedCase struct {
	maxConcurrent int
	condOn        bool // the switch's first value
	regs          []acceptedReg
	steps         []acceptedStep
}

func drawAcceptedCase(t *rapid.T) acceptedCase {
	c := acceptedCase{
		maxConcurrent: rapid.IntRange(0, 3).Draw(t, "maxConcurrent"),
		condOn:        rapid.Bool().Draw(t, "condOn"),
	}
	types := sysTypes[:rapid.IntRange(1, len(sysTypes)).Draw(t, "types")]
	nregs := rapid.IntRange(1, 4).Draw(t, "regs")
	var apps []int // the registrations with an application trigger
	for k := range nregs {
		r := acceptedReg{
			system:  rapid.Bool().Draw(t, "system"),
			sysType: rapid.SampledFrom(types).Draw(t, "sysType"),
			useCond: rapid.Bool().Draw(t, "useCond"),
			secs:    rapid.SliceOfN(rapid.IntRange(-1, 3), 1, 3).Draw(t, "secs"),
		}
		if !r.system {
			apps = append(apps, k)
		}
		c.regs = append(c.regs, r)
	}
	// Each step is drawn whole, so that shrinking a failure drops steps with their arguments.
	drawStep := func(t *rapid.T) acceptedStep {
		s := acceptedStep{op: rapid.SampledFrom([]string{"request", "request", "signal", "signal", "set",
			"unregister", "sleep", "sleep", "suspend", "resume"}).Draw(t, "op")}
		if s.op == "request" && len(apps) == 0 {
			s.op = "signal"
		}
		switch s.op {
		case "request":
			s.n = rapid.SampledFrom(apps).Draw(t, "reg")
		case "signal":
			s.typ = rapid.SampledFrom(types).Draw(t, "signal")
		case "set":
			s.on = rapid.Bool().Draw(t, "on")
		case "unregister":
			s.n = rapid.IntRange(0, nregs-1).Draw(t, "reg")
			s.on = rapid.Bool().Draw(t, "cancelTask")
		case "sleep":
			s.n = rapid.IntRange(1, 8).Draw(t, "halfSeconds")
		}
		return s
	}
	c.steps = rapid.SliceOfN(rapid.Custom(drawStep), 1, 40).Draw(t, "steps")
	return c
}

// TestEveryAcceptedFireCompletesOnce checks that every accepted fire ends in exactly one
// Completed event (semantics 9, 12 and 15): coalescing makes the number of events depend
// on timing, so it checks what holds whatever the timing. Every InstanceID is in one
// Completed event; every started instance has one, with Started set; the others are fires
// dropped by Unregister or Shutdown; a registration that accepted a fire has at least one
// event and never more than the fires it accepted. It also checks that Request answers as
// semantics 9 says, that a registration's instances never overlap and that MaxConcurrent
// holds.
func TestEveryAcceptedFireCompletesOnce(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		c := drawAcceptedCase(rt)
		var failure error
		synctest.Test(t, func(*testing.T) { failure = runAccepted(c) })
		if failure != nil {
			rt.Fatal(failure)
		}
	})
}

// runAccepted plays c on a real host and returns the first property that fails.
func runAccepted(c acceptedCase) error {
	h, err := bgtask.NewHost(bgtask.WithPolicy(bgtask.Policy{MaxConcurrent: c.maxConcurrent}),
		bgtask.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return err
	}
	shut := false
	defer func() { // on an early return, end the tasks so that the bubble can end
		if !shut {
			h.Shutdown(context.Background())
		}
	}()
	cond := bgtask.NewCondition(c.condOn)
	n := len(c.regs)

	var (
		mu        sync.Mutex
		completed = make([][]bgtask.CompletedEventArgs, n)
		started   = make(map[uuid.UUID]int) // instance → registration, recorded by Run
		problems  []error
	)
	problem := func(format string, args ...any) {
		mu.Lock()
		problems = append(problems, fmt.Errorf(format, args...))
		mu.Unlock()
	}
	running := make([]atomic.Int32, n) // instances of each registration in Run
	runs := make([]atomic.Int32, n)    // Run calls of each registration
	var live atomic.Int32              // instances of the host in Run

	regs := make([]*bgtask.Registration, n)
	apps := make([]*bgtask.ApplicationTrigger, n)
	for k, spec := range c.regs {
		task := func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			secs := spec.secs[int(runs[k].Add(1)-1)%len(spec.secs)]
			if running[k].Add(1) > 1 {
				problem("registration %d: two instances run at once", k)
			}
			if now := live.Add(1); c.maxConcurrent > 0 && int(now) > c.maxConcurrent {
				problem("%d instances run at once, MaxConcurrent is %d", now, c.maxConcurrent)
			}
			defer func() {
				live.Add(-1)
				running[k].Add(-1)
			}()
			mu.Lock()
			if _, dup := started[inst.InstanceID()]; dup {
				problems = append(problems, fmt.Errorf("registration %d: Run called twice for %v", k, inst.InstanceID()))
			}
			started[inst.InstanceID()] = k
			mu.Unlock()
			var timeout <-chan time.Time
			if secs >= 0 {
				timer := time.NewTimer(time.Duration(secs) * time.Second)
				defer timer.Stop()
				timeout = timer.C
			}
			select {
			case <-timeout:
			case <-ctx.Done():
			}
			return nil
		}
		b := bgtask.Builder{Name: fmt.Sprint(k), Task: bgtask.TaskFunc(task)}
		if spec.system {
			b.Trigger = &bgtask.SystemTrigger{Type: spec.sysType}
		} else {
			apps[k] = bgtask.NewApplicationTrigger()
			b.Trigger = apps[k]
		}
		if spec.useCond {
			b.Conditions = []bgtask.Condition{cond}
		}
		if regs[k], err = h.Register(b); err != nil {
			return err
		}
		regs[k].OnCompleted(func(e bgtask.CompletedEventArgs) {
			mu.Lock()
			completed[k] = append(completed[k], e)
			mu.Unlock()
		})
	}

	accepted := make([]int, n)       // fires accepted, before coalescing
	unregistered := make([]bool, n)  // Unregister was called
	abortCanceled := make([]bool, n) // Unregister(true) was called, the first time
	cancelAgain := make([]bool, n)   // Unregister(true) was called after Unregister
	suspended := false
	for k, s := range c.steps {
		synctest.Wait() // every instance started is in Run, every one that ended is retired
		switch s.op {
		case "request":
			r := s.n
			want := bgtask.Allowed
			switch {
			case unregistered[r] || suspended:
				want = bgtask.DisabledByPolicy
			case running[r].Load() > 0:
				want = bgtask.CurrentlyRunning
			}
			got, err := apps[r].Request(context.Background(), map[string]any{"step": k})
			if err != nil || got != want {
				return fmt.Errorf("step %d: Request of registration %d: %v, %v; want %v", k, r, got, err, want)
			}
			if got == bgtask.Allowed {
				accepted[r]++
			}
		case "signal":
			h.Signal(s.typ)
			for j, spec := range c.regs {
				if spec.system && spec.sysType == s.typ && !unregistered[j] {
					accepted[j]++
				}
			}
		case "set":
			cond.Set(s.on)
		case "unregister":
			regs[s.n].Unregister(s.on)
			if s.on && !unregistered[s.n] {
				abortCanceled[s.n] = true
			} else if s.on {
				cancelAgain[s.n] = true
			}
			unregistered[s.n] = true
		case "sleep":
			time.Sleep(time.Duration(s.n) * 500 * time.Millisecond)
		case "suspend":
			h.Suspend()
			suspended = true
		case "resume":
			h.Resume()
			suspended = false
		}
	}
	shut = true
	if err := h.Shutdown(context.Background()); err != nil {
		return fmt.Errorf("Shutdown: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	events := make(map[uuid.UUID]int) // InstanceID → Completed events, all registrations
	var badReason error
	for r, es := range completed {
		dropped, ran := 0, 0
		for _, e := range es {
			events[e.InstanceID]++
			if events[e.InstanceID] > 1 {
				return fmt.Errorf("registration %d: instance %v completed twice", r, e.InstanceID)
			}
			owner, wasStarted := started[e.InstanceID]
			if e.Started.IsZero() {
				// A fire dropped before it started: by Unregister (Abort) if the
				// registration was unregistered, else by Shutdown (Terminating).
				dropped++
				want := bgtask.Terminating
				if unregistered[r] {
					want = bgtask.Abort
				}
				var ce *bgtask.CanceledError
				switch {
				case wasStarted:
					return fmt.Errorf("registration %d: started instance %v completed with Started zero", r, e.InstanceID)
				case !e.Canceled || e.Reason != want || !errors.As(e.Err, &ce) || ce.Reason != want:
					return fmt.Errorf("registration %d: dropped fire completed with %+v; want canceled with %v", r, e, want)
				}
				continue
			}
			ran++
			switch {
			case !wasStarted || owner != r:
				return fmt.Errorf("registration %d: Completed %v with Started set, but Run was not called for it here", r, e.InstanceID)
			case e.Err != nil:
				return fmt.Errorf("registration %d: instance %v completed with %v", r, e.InstanceID, e.Err)
			case e.Canceled && e.Reason != bgtask.Terminating && !(e.Reason == bgtask.Abort && abortCanceled[r]):
				// Abort comes only from Unregister(true) on a registered registration:
				// Unregister's doc says that calling it again does nothing. Reported last,
				// so that the properties above are checked for every registration first.
				if badReason == nil {
					badReason = fmt.Errorf("registration %d: instance %v canceled with %v; Unregister(true) first: %v, Unregister called again with cancelTask: %v",
						r, e.InstanceID, e.Reason, abortCanceled[r], cancelAgain[r])
				}
			}
		}
		startedHere := 0
		for _, owner := range started {
			if owner == r {
				startedHere++
			}
		}
		switch {
		case ran != startedHere || dropped+startedHere != len(es):
			return fmt.Errorf("registration %d: %d instances started, %d Completed events, %d of them dropped fires", r, startedHere, len(es), dropped)
		case accepted[r] > 0 && len(es) == 0:
			return fmt.Errorf("registration %d: %d fires accepted, no Completed event", r, accepted[r])
		case len(es) > accepted[r]:
			return fmt.Errorf("registration %d: %d Completed events for %d accepted fires", r, len(es), accepted[r])
		}
	}
	for id, r := range started {
		if events[id] != 1 {
			return fmt.Errorf("registration %d: started instance %v has %d Completed events", r, id, events[id])
		}
	}
	return badReason
}

package bgtask_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"pgregory.net/rapid"

	"github.com/bgtask-go/bgtask"
)

// step is one move of the lifecycle property test, drawn before the bubble runs.
type step struct {
	op     string // getDeferral, complete, setProgress, cancel, returnRun, sleep
	n      int    // which deferral; the progress value; the reason; seconds to sleep
	repeat bool   // complete: call Complete twice
}

const propGrace = 3 * time.Second

func drawSteps(t *rapid.T) []step {
	ops := rapid.SliceOfN(rapid.SampledFrom([]string{"getDeferral", "complete", "setProgress", "cancel", "returnRun", "sleep"}), 1, 40).Draw(t, "ops")
	steps := make([]step, len(ops))
	for k, op := range ops {
		s := step{op: op}
		switch op {
		case "complete":
			s.n = rapid.IntRange(0, 5).Draw(t, "deferral")
			s.repeat = rapid.Bool().Draw(t, "repeat")
		case "setProgress":
			s.n = rapid.IntRange(1, 100).Draw(t, "progress")
		case "cancel":
			s.n = rapid.IntRange(0, 11).Draw(t, "reason")
		case "sleep":
			// Cancellations happen at even seconds and the grace period is odd, so a sleep
			// never ends at the very instant of a termination.
			s.n = 2 * rapid.IntRange(1, 2).Draw(t, "sleep")
		}
		steps[k] = s
	}
	return steps
}

// lifecycleModel predicts when the instance finishes and how.
type lifecycleModel struct {
	runReturned bool
	open        map[int]bool // deferral index → still open
	canceled    bool
	reason      bgtask.CancellationReason
	cancelAt    time.Time
	progress    uint32
	finished    bool
	terminated  bool
	want        bgtask.CompletedEventArgs
}

func (m *lifecycleModel) settle(now time.Time) {
	if m.finished {
		return
	}
	openCount := 0
	for _, o := range m.open {
		if o {
			openCount++
		}
	}
	switch {
	case m.runReturned && openCount == 0:
		m.finished = true
	case m.canceled && !now.Before(m.cancelAt.Add(propGrace)):
		m.finished, m.terminated = true, true
	default:
		return
	}
	m.want = bgtask.CompletedEventArgs{Canceled: m.canceled, Reason: m.reason, Progress: m.progress}
}

func TestLifecycleProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		steps := drawSteps(rt)
		var failure error
		synctest.Test(t, func(t *testing.T) { failure = runLifecycle(t, steps) })
		if failure != nil {
			rt.Fatal(failure)
		}
	})
}

// runLifecycle plays steps against a real instance and returns the first disagreement
// with the model.
func runLifecycle(t *testing.T, steps []step) error {
	insts := make(chan bgtask.BackgroundTaskInstance, 1)
	ret := make(chan struct{})
	f := newFixture(t, started(insts, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		<-ret
		return nil
	}), bgtask.WithPolicy(bgtask.Policy{GracePeriod: propGrace}))
	f.request(t, nil)
	inst := <-insts
	m := &lifecycleModel{open: map[int]bool{}}
	var defs []*bgtask.Deferral
	returned := false
	var failure error
	check := func(k int) {
		synctest.Wait()
		m.settle(time.Now())
		got := len(f.done)
		switch {
		case failure != nil:
		case !m.finished && got != 0:
			failure = fmt.Errorf("step %d: completed before the model allows", k)
		case m.finished && got != 1:
			failure = fmt.Errorf("step %d: %d Completed events, want 1", k, got)
		}
	}
	for k, s := range steps {
		switch s.op {
		case "getDeferral":
			defs = append(defs, inst.GetDeferral())
			if !m.finished {
				m.open[len(defs)-1] = true
			}
		case "complete":
			if s.n < len(defs) {
				defs[s.n].Complete()
				if s.repeat {
					defs[s.n].Complete()
				}
				m.open[s.n] = false
			}
		case "setProgress":
			inst.SetProgress(uint32(s.n))
			if !m.finished {
				m.progress = uint32(s.n)
			}
		case "cancel":
			f.host.Cancel(bgtask.CancellationReason(s.n))
			if !m.finished && !m.canceled {
				m.canceled, m.reason, m.cancelAt = true, bgtask.CancellationReason(s.n), time.Now()
			}
		case "returnRun":
			if !returned {
				returned = true
				ret <- struct{}{}
				m.runReturned = true
			}
		case "sleep":
			time.Sleep(time.Duration(s.n) * time.Second)
		}
		check(k)
	}
	// End every open thread so that the bubble can end: Run, deferrals, then the host.
	if !returned {
		close(ret)
		m.runReturned = true
	}
	for k, d := range defs {
		d.Complete()
		m.open[k] = false
	}
	check(len(steps))
	shutdownErr := f.host.Shutdown(context.Background())
	if failure != nil {
		return failure
	}
	got := <-f.done
	if m.terminated != errors.Is(got.Err, bgtask.ErrTerminated) {
		return fmt.Errorf("terminated: got %v, model %v", got.Err, m.terminated)
	}
	if !m.terminated && got.Err != nil {
		return fmt.Errorf("unexpected error %v", got.Err)
	}
	if got.Canceled != m.want.Canceled || got.Canceled && got.Reason != m.want.Reason {
		return fmt.Errorf("canceled %v %v, model %v %v", got.Canceled, got.Reason, m.want.Canceled, m.want.Reason)
	}
	if got.Progress != m.want.Progress {
		return fmt.Errorf("progress %d, model %d", got.Progress, m.want.Progress)
	}
	if shutdownErr != nil && !m.terminated {
		return fmt.Errorf("shutdown: %v", shutdownErr)
	}
	return nil
}

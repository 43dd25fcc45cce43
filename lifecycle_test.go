package bgtask_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"pgregory.net/rapid"

	"github.com/bgtask-go/bgtask"
)

// step is one move of the lifecycle property test, drawn before the bubble runs: getDeferral,
// complete, setProgress, cancel, returnRun, sleep, goFunc (inst.Go with a func that blocks
// until releaseGo), releaseGo, onCanceled (a handler that records its calls) or
// removeHandler.
type step struct {
	op      string
	n       int  // which deferral, Go func or handler; the progress value; the reason; seconds to sleep
	repeat  bool // complete: call Complete twice
	outcome int  // returnRun, releaseGo: return nil (0), return an error (1) or panic (2)
}

const propGrace = 3 * time.Second

func drawSteps(t *rapid.T) []step {
	ops := rapid.SliceOfN(rapid.SampledFrom([]string{"getDeferral", "complete", "setProgress", "cancel", "returnRun", "sleep",
		"goFunc", "releaseGo", "onCanceled", "removeHandler"}), 1, 40).Draw(t, "ops")
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
		case "returnRun":
			s.outcome = rapid.IntRange(0, 2).Draw(t, "outcome")
		case "releaseGo":
			s.n = rapid.IntRange(0, 3).Draw(t, "goFunc")
			s.outcome = rapid.IntRange(0, 2).Draw(t, "outcome")
		case "removeHandler":
			s.n = rapid.IntRange(0, 3).Draw(t, "handler")
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
	goOpen      map[int]bool // Go func index → started and not returned
	canceled    bool
	reason      bgtask.CancellationReason
	cancelAt    time.Time
	progress    uint32
	failure     reportedErr // the first error reported before the end, by Run or a Go func
	finished    bool
	terminated  bool
	left        bgtask.TerminatedError // at termination: what was left (RunReturned, Deferrals, GoRunning)
	want        bgtask.CompletedEventArgs
}

// reportedErr is an error that Run or a Go func reports: one it returns, or a panic. The zero
// value is no error.
type reportedErr struct {
	err   error
	panic any
}

// outcomeOf is what a func told to end with outcome (0, 1 or 2, see step) reports.
func outcomeOf(outcome int, err error, panicValue any) reportedErr {
	switch outcome {
	case 1:
		return reportedErr{err: err}
	case 2:
		return reportedErr{panic: panicValue}
	}
	return reportedErr{}
}

// matches reports whether got is the error r predicts: nil, r.err itself, or a
// *PanicError with r.panic.
func (r reportedErr) matches(got error) bool {
	if r.panic != nil {
		var pe *bgtask.PanicError
		return errors.As(got, &pe) && pe.Value == r.panic
	}
	return got == r.err
}

func (r reportedErr) String() string {
	if r.panic != nil {
		return fmt.Sprintf("panic(%v)", r.panic)
	}
	return fmt.Sprint(r.err)
}

// report records r as the instance's result if it is the first error before the end.
func (m *lifecycleModel) report(r reportedErr) {
	if !m.finished && m.failure == (reportedErr{}) {
		m.failure = r
	}
}

func countOpen(open map[int]bool) int {
	n := 0
	for _, o := range open {
		if o {
			n++
		}
	}
	return n
}

func (m *lifecycleModel) settle(now time.Time) {
	if m.finished {
		return
	}
	deferrals, goRunning := countOpen(m.open), countOpen(m.goOpen)
	switch {
	case m.runReturned && deferrals+goRunning == 0:
		m.finished = true
	case m.canceled && !now.Before(m.cancelAt.Add(propGrace)):
		m.finished, m.terminated = true, true
		m.left = bgtask.TerminatedError{RunReturned: m.runReturned, Deferrals: deferrals + goRunning, GoRunning: goRunning}
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

// lifecycleGoFunc is a func given to inst.Go: it blocks until released, then ends as told.
type lifecycleGoFunc struct {
	release  chan int // the outcome; buffered, so releasing never blocks
	ran      atomic.Bool
	live     bool // Go was called before the instance ended: f must run
	released bool
	err      error
	panic    string
}

// lifecycleHandler is a handler given to inst.OnCanceled; it records its calls.
type lifecycleHandler struct {
	mu       sync.Mutex
	calls    int
	reason   bgtask.CancellationReason
	ctxDone  bool // the instance's context was done when it was called
	sameInst bool // it was called with the instance it was added to
	remove   func()
	early    bool // removed before the instance was canceled: must never be called
}

var (
	errLifecycleRun   = errors.New("run failed")
	lifecycleRunPanic = "run panicked"
)

// runLifecycle plays steps against a real instance and returns the first disagreement
// with the model.
func runLifecycle(t *testing.T, steps []step) error {
	insts := make(chan bgtask.BackgroundTaskInstance, 1)
	ret := make(chan int)
	f := newFixture(t, started(insts, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		switch <-ret {
		case 1:
			return errLifecycleRun
		case 2:
			panic(lifecycleRunPanic)
		}
		return nil
	}), bgtask.WithPolicy(bgtask.Policy{GracePeriod: propGrace}))
	f.request(t, nil)
	inst := <-insts
	m := &lifecycleModel{open: map[int]bool{}, goOpen: map[int]bool{}}
	var defs []*bgtask.Deferral
	var gos []*lifecycleGoFunc
	var handlers []*lifecycleHandler
	returned := false
	var failure error
	checkHandlers := func(k int) {
		for j, h := range handlers {
			h.mu.Lock()
			calls, reason, ctxDone, same := h.calls, h.reason, h.ctxDone, h.sameInst
			h.mu.Unlock()
			want := 0
			if m.canceled && !h.early {
				want = 1
			}
			switch {
			case failure != nil:
			case calls != want:
				failure = fmt.Errorf("step %d: Canceled handler %d called %d times, want %d (canceled %v, removed before %v)", k, j, calls, want, m.canceled, h.early)
			case calls == 1 && (reason != m.reason || !ctxDone || !same):
				failure = fmt.Errorf("step %d: Canceled handler %d called with %v (want %v), context done %v, same instance %v", k, j, reason, m.reason, ctxDone, same)
			}
		}
	}
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
		for j, g := range gos {
			if failure == nil && g.ran.Load() != g.live {
				failure = fmt.Errorf("step %d: Go func %d ran: %v, want %v", k, j, g.ran.Load(), g.live)
			}
		}
		checkHandlers(k)
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
				ret <- s.outcome
				m.runReturned = true
				m.report(outcomeOf(s.outcome, errLifecycleRun, lifecycleRunPanic))
			}
		case "sleep":
			time.Sleep(time.Duration(s.n) * time.Second)
		case "goFunc":
			j := len(gos)
			g := &lifecycleGoFunc{release: make(chan int, 1), live: !m.finished,
				err: fmt.Errorf("go %d failed", j), panic: fmt.Sprintf("go %d panicked", j)}
			gos = append(gos, g)
			inst.Go(func(ctx context.Context) error {
				g.ran.Store(true)
				switch <-g.release {
				case 1:
					return g.err
				case 2:
					panic(g.panic)
				}
				return nil
			})
			if g.live {
				m.goOpen[j] = true
			}
		case "releaseGo":
			if s.n < len(gos) && !gos[s.n].released {
				g := gos[s.n]
				g.released = true
				g.release <- s.outcome
				if m.goOpen[s.n] {
					m.goOpen[s.n] = false
					m.report(outcomeOf(s.outcome, g.err, g.panic))
				}
			}
		case "onCanceled":
			h := &lifecycleHandler{}
			handlers = append(handlers, h)
			h.remove = inst.OnCanceled(func(i bgtask.BackgroundTaskInstance, reason bgtask.CancellationReason) {
				h.mu.Lock()
				defer h.mu.Unlock()
				h.calls++
				h.reason, h.ctxDone, h.sameInst = reason, i.Context().Err() != nil, i.InstanceID() == inst.InstanceID()
			})
		case "removeHandler":
			if s.n < len(handlers) {
				handlers[s.n].remove()
				if !m.canceled {
					handlers[s.n].early = true
				}
			}
		}
		check(k)
	}
	// End every open thread so that the bubble can end: Run, deferrals, Go funcs, then the
	// host.
	if !returned {
		close(ret)
		m.runReturned = true
	}
	for k, d := range defs {
		d.Complete()
		m.open[k] = false
	}
	for k, g := range gos {
		if !g.released {
			g.released = true
			g.release <- 0
			m.goOpen[k] = false
		}
	}
	check(len(steps))
	shutdownErr := f.host.Shutdown(context.Background())
	checkHandlers(len(steps) + 1) // Shutdown cancels nothing that ended
	if failure != nil {
		return failure
	}
	got := <-f.done
	if m.terminated != errors.Is(got.Err, bgtask.ErrTerminated) {
		return fmt.Errorf("terminated: got %v, model %v", got.Err, m.terminated)
	}
	if m.terminated {
		var te *bgtask.TerminatedError
		switch {
		case !errors.As(got.Err, &te):
			return fmt.Errorf("terminated with %T %v, not a *TerminatedError", got.Err, got.Err)
		case te.RunReturned != m.left.RunReturned || te.Deferrals != m.left.Deferrals || te.GoRunning != m.left.GoRunning:
			return fmt.Errorf("terminated: Run returned %v, %d deferrals, %d Go funcs running; model %v, %d, %d",
				te.RunReturned, te.Deferrals, te.GoRunning, m.left.RunReturned, m.left.Deferrals, m.left.GoRunning)
		case !m.failure.matches(te.Err):
			return fmt.Errorf("terminated with earlier error %v, model %v", te.Err, m.failure)
		}
	} else if !m.failure.matches(got.Err) {
		return fmt.Errorf("result %v, model %v", got.Err, m.failure)
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

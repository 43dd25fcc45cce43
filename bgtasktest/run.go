package bgtasktest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask"
)

// Result is how the instance that [Run] ran ended. It is a plain value: Run keeps no
// reference to it, nor to its Progress slice.
type Result struct {
	// CompletedEventArgs are those of the instance's Completed event. Its Progress field,
	// the last progress value, is reached as Result.CompletedEventArgs.Progress.
	bgtask.CompletedEventArgs
	// Progress holds every value the task passed to SetProgress before this Run returned,
	// in order, none coalesced: from the task's Run, and from its Go funcs and other
	// goroutines, also after the task's Run returned.
	Progress []uint32
	// Terminated says whether the instance was terminated: canceled, and not finished
	// within its grace period. Err then wraps [bgtask.ErrTerminated] and is a
	// [*bgtask.TerminatedError], and Run has failed the test.
	Terminated bool
}

// regName is the name of the registration Run makes.
const regName = "bgtasktest"

// Run runs one instance of task on a host of its own, made for this call, and returns
// when the instance has finished or been terminated; then it shuts that host down. It
// waits as long as the task runs: a task that never returns, or a deferral never
// completed, keeps it waiting unless the instance is canceled (see [CancelAfter],
// [CancelAtProgress], and MaxExecutionTime in [WithPolicy]); inside a [testing/synctest]
// bubble, synctest reports such a deadlock instead.
//
// The host records deferral sites ([bgtask.WithDeferralSites]), so that when the instance
// is terminated Run fails t with [testing.TB.Errorf], naming the file and line of each
// deferral left and of each Go func still running. Those goroutines may still run when
// Run returns: Go cannot stop them, and the host does not wait for them. Any other trouble
// in shutting the host down fails t too. Neither an error from the task nor its panic
// fails t: they are in the Result's Err, for the test to check. Bad options, or a nil
// task, fail t with [testing.TB.Fatalf]; Run then returns the zero Result without running
// anything.
//
// The host's log goes to t.Log while Run runs, and is dropped after. Run calls only
// these methods of t: Helper, Errorf, Fatalf and Log, from the goroutine that called Run
// but for Log. Call Run from the test's goroutine, as Fatalf requires.
//
// The task receives an instance that wraps the host's, to record its progress: a task that
// type-asserts its instance, or compares it with one from elsewhere (a Canceled handler
// gets the same wrapper), sees the wrapper, not the host's. The registration is named
// "bgtasktest".
//
// Inside a testing/synctest bubble Run makes the host, and with it every timer of the
// instance, inside the bubble: the grace period, the time limits and [CancelAfter] run on
// the bubble's fake clock.
func Run(t testing.TB, task bgtask.BackgroundTask, opts ...Option) Result {
	t.Helper()
	cfg, err := newConfig(opts)
	if err == nil && isNil(task) {
		err = errors.New("nil task")
	}
	if err != nil {
		t.Fatalf("bgtasktest: %v", err)
		return Result{}
	}
	log := &testLog{t: t}
	defer log.close()
	host, err := bgtask.NewHost(bgtask.WithPolicy(cfg.policy), bgtask.WithDeferralSites(true), bgtask.WithLogger(log.logger()))
	if err != nil {
		t.Fatalf("bgtasktest: %v", err)
		return Result{}
	}
	r := &run{task: task, cfg: cfg, host: host}
	e, err := r.once()
	r.stopClock()
	shutdownErr := r.shutdown()
	if err != nil {
		t.Fatalf("bgtasktest: %v", errors.Join(err, shutdownErr))
		return Result{}
	}
	res := Result{CompletedEventArgs: e, Progress: r.recorded(), Terminated: errors.Is(e.Err, bgtask.ErrTerminated)}
	report(t, res, shutdownErr)
	return res
}

// report fails t when the instance was terminated, and when the shutdown went wrong in a
// way that the termination does not already say.
func report(t testing.TB, res Result, shutdownErr error) {
	t.Helper()
	if res.Terminated {
		t.Errorf("%s", terminatedMessage(res.Err))
	}
	if shutdownErr != nil && !(res.Terminated && onlyLeft(shutdownErr, res.InstanceID)) {
		t.Errorf("bgtasktest: shutting down the host: %v", shutdownErr)
	}
}

// run is one call of Run. It is the task the host runs: it wraps the instance and starts
// the CancelAfter clock, then runs the task under test.
type run struct {
	task bgtask.BackgroundTask
	cfg  *config
	host *bgtask.Host

	canceled atomic.Bool // CancelAtProgress has canceled

	mu       sync.Mutex
	progress []uint32
	clock    *time.Timer // CancelAfter's
}

// Run wraps inst and runs the task under test with the wrapper.
func (r *run) Run(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
	r.startClock(inst)
	return r.task.Run(ctx, &instance{BackgroundTaskInstance: inst, run: r})
}

// once registers r, fires it once and waits for the Completed event. The handler is added
// before the fire, so the event cannot be missed.
func (r *run) once() (bgtask.CompletedEventArgs, error) {
	trigger, fire := r.trigger()
	reg, err := r.host.Register(bgtask.Builder{Name: regName, Task: r, Trigger: trigger})
	if err != nil {
		return bgtask.CompletedEventArgs{}, err
	}
	done := make(chan bgtask.CompletedEventArgs, 1) // one event per fire
	reg.OnCompleted(func(e bgtask.CompletedEventArgs) { done <- e })
	switch res, err := fire(); {
	case err != nil:
		return bgtask.CompletedEventArgs{}, fmt.Errorf("firing the task: %w", err)
	case res != bgtask.Allowed:
		return bgtask.CompletedEventArgs{}, fmt.Errorf("the host refused to start the task: %v", res)
	}
	return <-done, nil
}

// trigger returns the trigger to register and the func that fires it once: an
// ApplicationTrigger Request, or, with WithDetails, a CustomTrigger's fire.
func (r *run) trigger() (bgtask.Trigger, func() (bgtask.ApplicationTriggerResult, error)) {
	if r.cfg.detailsBy != "WithDetails" {
		t := bgtask.NewApplicationTrigger()
		return t, func() (bgtask.ApplicationTriggerResult, error) {
			return t.Request(context.Background(), r.cfg.args)
		}
	}
	// Watch starts at Register, but fires only when told: after OnCompleted is added.
	start := make(chan struct{})
	answer := make(chan bgtask.ApplicationTriggerResult, 1)
	t := &bgtask.CustomTrigger{Watch: func(ctx context.Context, fire func(details any) bgtask.ApplicationTriggerResult) error {
		select {
		case <-start:
			answer <- fire(r.cfg.details)
		case <-ctx.Done():
		}
		<-ctx.Done()
		return nil
	}}
	return t, func() (bgtask.ApplicationTriggerResult, error) {
		close(start)
		return <-answer, nil
	}
}

// startClock starts CancelAfter's timer on the host's clock, or with 0 cancels at once.
func (r *run) startClock(inst bgtask.BackgroundTaskInstance) {
	c := r.cfg.after
	if c == nil {
		return
	}
	id := inst.InstanceID()
	if c.after == 0 {
		r.host.CancelInstance(id, c.reason)
		return
	}
	r.mu.Lock()
	r.clock = time.AfterFunc(c.after, func() { r.host.CancelInstance(id, c.reason) })
	r.mu.Unlock()
}

// stopClock stops CancelAfter's timer, if it has not fired.
func (r *run) stopClock() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clock != nil {
		r.clock.Stop()
	}
}

// record appends p to the progress values.
func (r *run) record(p uint32) {
	r.mu.Lock()
	r.progress = append(r.progress, p)
	r.mu.Unlock()
}

// recorded returns a copy of the progress values: goroutines the instance left behind may
// still add to them.
func (r *run) recorded() []uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint32(nil), r.progress...)
}

// reached reports whether p is the first value to reach CancelAtProgress's.
func (r *run) reached(p uint32) bool {
	c := r.cfg.atProgress
	return c != nil && p >= c.at && r.canceled.CompareAndSwap(false, true)
}

// shutdown shuts the host down. The instance has ended, so nothing should make it wait;
// the deadline, one grace period, makes sure that Run returns whatever happens.
func (r *run) shutdown() error {
	grace := r.cfg.policy.GracePeriod
	if grace == 0 {
		grace = bgtask.DefaultGracePeriod
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	return r.host.Shutdown(ctx)
}

// isNil reports whether task is nil, or a nil func or pointer in an interface.
func isNil(task bgtask.BackgroundTask) bool {
	if task == nil {
		return true
	}
	switch v := reflect.ValueOf(task); v.Kind() {
	case reflect.Func, reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Interface:
		return v.IsNil()
	}
	return false
}

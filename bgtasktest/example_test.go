package bgtasktest_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtasktest"
)

// printTB stands for the *testing.T of a test, which an example does not have: it prints
// what Run reports instead of failing a test. In a test, pass t itself.
type printTB struct{ testing.TB }

func (printTB) Helper()    {}
func (printTB) Log(...any) {}
func (printTB) Errorf(format string, args ...any) {
	fmt.Println("the test fails:", fmt.Sprintf(format, args...))
}
func (printTB) Fatalf(format string, args ...any) {
	fmt.Println("the test stops:", fmt.Sprintf(format, args...))
}

// A task tested for the progress it reports: Result.Progress holds every value, where a
// Progress handler may see them coalesced.
func ExampleRun() {
	t := printTB{} // in a test: the *testing.T

	copyFiles := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		for done := 1; done <= 4; done++ {
			inst.SetProgress(uint32(done * 25))
		}
		return nil
	})
	res := bgtasktest.Run(t, copyFiles)
	fmt.Println("progress:", res.Progress)
	fmt.Println("result:", res.CheckResult())
	// Output:
	// progress: [25 50 75 100]
	// result: <nil>
}

// A task that must stop cleanly when canceled halfway. The cancellation happens inside the
// SetProgress call that reaches 60, so the task sees it right after, on every run.
func ExampleCancelAtProgress() {
	t := printTB{} // in a test: the *testing.T

	index := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		for n := 1; n <= 5; n++ {
			inst.SetProgress(uint32(n * 20))
			if ctx.Err() != nil {
				return fmt.Errorf("stopped after %d of 5: %w", n, context.Cause(ctx))
			}
		}
		return nil
	})
	res := bgtasktest.Run(t, index, bgtasktest.CancelAtProgress(60, bgtask.EnergySaver))
	fmt.Println("progress:", res.Progress)
	fmt.Println("canceled:", res.Canceled, res.Reason)
	fmt.Println("result:", res.Err)
	// Output:
	// progress: [20 40 60]
	// canceled: true EnergySaver
	// result: stopped after 3 of 5: bgtask: canceled: EnergySaver
}

// A task that leaks a deferral when it is canceled: the instance is terminated after its
// grace period, Result.Terminated is true, and Run fails the test with the line where the
// deferral was taken. A short grace period keeps the example fast; in a synctest bubble
// the default 5s takes no time.
func ExampleRun_leakedDeferral() {
	t := printTB{} // in a test: the *testing.T

	upload := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		d := inst.GetDeferral()
		if ctx.Err() != nil {
			return ctx.Err() // the bug: d is never completed on this path
		}
		defer d.Complete()
		return nil
	})
	res := bgtasktest.Run(t, upload,
		bgtasktest.CancelAfter(0, bgtask.Abort), // canceled from the start
		bgtasktest.WithPolicy(bgtask.Policy{GracePeriod: 10 * time.Millisecond}))
	fmt.Println("terminated:", res.Terminated)
	// Output:
	// the test fails: bgtasktest: the instance was terminated: canceled with Abort, it did not finish within its grace period
	// 	Run had returned; left: 1 deferral(s), 0 Go func(s) running
	// 	deferral not completed, taken at example_test.go:78
	// 	earlier error: context canceled
	// terminated: true
}

// A task canceled after a while. Here the time is real and short; inside a
// testing/synctest bubble it is the bubble's, and an hour takes no time (see
// TestRunInBubble).
func ExampleCancelAfter() {
	t := printTB{} // in a test: the *testing.T

	watch := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		<-ctx.Done()
		return context.Cause(ctx)
	})
	res := bgtasktest.Run(t, watch, bgtasktest.CancelAfter(10*time.Millisecond, bgtask.LoggingOff))
	fmt.Println("canceled:", res.Canceled, res.Reason)
	// Output:
	// canceled: true LoggingOff
}

// A task that reads the arguments of the ApplicationTrigger Request that started it.
func ExampleWithArgs() {
	t := printTB{} // in a test: the *testing.T

	greet := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		name, err := bgtask.Arg[string](inst, "name")
		if err != nil {
			return err
		}
		fmt.Println("hello,", name)
		return nil
	})
	res := bgtasktest.Run(t, greet, bgtasktest.WithArgs(map[string]any{"name": "gopher"}))
	fmt.Println("result:", res.Err)
	// Output:
	// hello, gopher
	// result: <nil>
}

// A task started by a time trigger, given the time its fire was due.
func ExampleWithDetails() {
	t := printTB{} // in a test: the *testing.T

	report := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		d, ok := inst.TriggerDetails().(*bgtask.TimeTriggerDetails)
		if !ok {
			return fmt.Errorf("not started by a time trigger: %T", inst.TriggerDetails())
		}
		fmt.Println("report for", d.ScheduledAt.Format(time.DateOnly))
		return nil
	})
	due := time.Date(2030, time.March, 1, 0, 0, 0, 0, time.UTC)
	res := bgtasktest.Run(t, report, bgtasktest.WithDetails(&bgtask.TimeTriggerDetails{ScheduledAt: due}))
	fmt.Println("result:", res.Err)
	// Output:
	// report for 2030-03-01
	// result: <nil>
}

// A task run under a host policy: here a time limit.
func ExampleWithPolicy() {
	t := printTB{} // in a test: the *testing.T

	crawl := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		<-ctx.Done()
		return context.Cause(ctx)
	})
	res := bgtasktest.Run(t, crawl, bgtasktest.WithPolicy(bgtask.Policy{MaxExecutionTime: 10 * time.Millisecond}))
	fmt.Println("canceled:", res.Canceled, res.Reason)
	// Output:
	// canceled: true ExecutionTimeExceeded
}

// TestRunInBubble is the test of the package documentation: inside a synctest bubble Run
// is on the bubble's fake clock, so ten minutes pass as soon as the task waits, exactly.
func TestRunInBubble(t *testing.T) {
	slowTask := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		<-ctx.Done()
		return context.Cause(ctx)
	})
	synctest.Test(t, func(t *testing.T) {
		res := bgtasktest.Run(t, slowTask, bgtasktest.CancelAfter(10*time.Minute, bgtask.Abort))
		if !res.Canceled || res.Finished.Sub(res.Started) != 10*time.Minute {
			t.Errorf("canceled %v after %v", res.Canceled, res.Finished.Sub(res.Started))
		}
	})
}

package bgtasktest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtasktest"
)

// recordTB is a testing.TB that records what Run reports instead of failing the test,
// so that a test can check that Run fails a test. Fatalf does not stop the goroutine.
// The methods Run does not call go to the real test's.
type recordTB struct {
	testing.TB
	mu     sync.Mutex
	errors []string
	fatals []string
	logs   []string
}

func (r *recordTB) Helper() {}

func (r *recordTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recordTB) Fatalf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fatals = append(r.fatals, fmt.Sprintf(format, args...))
}

func (r *recordTB) Log(args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, fmt.Sprint(args...))
}

// failures returns the Errorf and Fatalf messages.
func (r *recordTB) failures() (errs, fatals []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errors...), append([]string(nil), r.fatals...)
}

// line returns the line it is called from.
func line() int {
	_, _, l, _ := runtime.Caller(1)
	return l
}

// steps is a task that sets the progress to each value in turn, and returns the
// cancellation as soon as it sees it.
func steps(values ...uint32) bgtask.TaskFunc {
	return func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		for _, v := range values {
			inst.SetProgress(v)
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
		}
		return nil
	}
}

func TestRunRecordsEveryProgress(t *testing.T) {
	var values []uint32
	for v := range uint32(1000) {
		values = append(values, v+1)
	}
	res := bgtasktest.Run(t, steps(values...))
	require.NoError(t, res.CheckResult())
	assert.Equal(t, values, res.Progress, "every value, none coalesced")
	assert.Equal(t, uint32(1000), res.CompletedEventArgs.Progress)
	assert.False(t, res.Canceled)
	assert.False(t, res.Terminated)
	assert.False(t, res.Started.IsZero())
	assert.False(t, res.Finished.Before(res.Started))
}

func TestRunDefaultDetails(t *testing.T) {
	var details any
	var name string
	res := bgtasktest.Run(t, bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
		details, name = inst.TriggerDetails(), inst.Task().Name()
		return nil
	}))
	require.NoError(t, res.Err)
	assert.Equal(t, &bgtask.ApplicationTriggerDetails{}, details)
	assert.Equal(t, "bgtasktest", name)
	assert.Empty(t, res.Progress)
}

func TestWithArgs(t *testing.T) {
	args := map[string]any{"path": "/inbox", "limit": 3}
	var path string
	var limit int
	res := bgtasktest.Run(t, bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
		var err error
		if path, err = bgtask.Arg[string](inst, "path"); err != nil {
			return err
		}
		if limit, err = bgtask.Arg[int](inst, "limit"); err != nil {
			return err
		}
		inst.TriggerDetails().(*bgtask.ApplicationTriggerDetails).Arguments["path"] = "changed"
		return nil
	}), bgtasktest.WithArgs(args))
	require.NoError(t, res.Err)
	assert.Equal(t, "/inbox", path)
	assert.Equal(t, 3, limit)
	assert.Equal(t, "/inbox", args["path"], "the task gets a copy")
}

type feed struct{ URL string }

func TestWithDetails(t *testing.T) {
	scheduled := &bgtask.TimeTriggerDetails{ScheduledAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	cases := []struct {
		name    string
		details any
	}{
		{"time", scheduled},
		{"system", &bgtask.SystemTriggerDetails{Type: bgtask.SystemTriggerInternetAvailable}},
		{"the program's own", feed{URL: "https://example.com/feed"}},
		{"nil", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got any = "not run"
			res := bgtasktest.Run(t, bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
				got = inst.TriggerDetails()
				return nil
			}), bgtasktest.WithDetails(c.details))
			require.NoError(t, res.Err)
			assert.Equal(t, c.details, got)
		})
	}
	t.Run("not copied", func(t *testing.T) {
		var got any
		bgtasktest.Run(t, bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			got = inst.TriggerDetails()
			return nil
		}), bgtasktest.WithDetails(scheduled))
		assert.Same(t, scheduled, got)
	})
}

func TestWithPolicy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		res := bgtasktest.Run(t, bgtask.TaskFunc(func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
			<-ctx.Done()
			return context.Cause(ctx)
		}), bgtasktest.WithPolicy(bgtask.Policy{MaxExecutionTime: time.Minute}))
		assert.True(t, res.Canceled)
		assert.Equal(t, bgtask.ExecutionTimeExceeded, res.Reason)
		assert.Equal(t, time.Minute, res.Finished.Sub(res.Started), "on the bubble's clock")
		assert.ErrorIs(t, res.Err, bgtask.ErrCanceled)
	})
}

func TestCancelAtProgress(t *testing.T) {
	cases := []struct {
		name   string
		at     uint32
		values []uint32
		want   []uint32 // the progress seen; nil: not canceled
	}{
		{"at the value", 50, []uint32{10, 20, 30, 40, 50, 60, 70}, []uint32{10, 20, 30, 40, 50}},
		{"past the value", 50, []uint32{45, 60, 70}, []uint32{45, 60}},
		{"at 0, the first call", 0, []uint32{7, 8}, []uint32{7}},
		{"not reached", 50, []uint32{10, 40}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := bgtasktest.Run(t, steps(c.values...), bgtasktest.CancelAtProgress(c.at, bgtask.QuietHoursEntered))
			if c.want == nil {
				require.NoError(t, res.Err)
				assert.False(t, res.Canceled)
				assert.Equal(t, c.values, res.Progress)
				return
			}
			assert.Equal(t, c.want, res.Progress, "the task sees the cancellation right after SetProgress")
			assert.True(t, res.Canceled)
			assert.Equal(t, bgtask.QuietHoursEntered, res.Reason)
			var ce *bgtask.CanceledError
			require.ErrorAs(t, res.Err, &ce)
			assert.Equal(t, bgtask.QuietHoursEntered, ce.Reason)
		})
	}
}

func TestCancelAtProgressFromGo(t *testing.T) {
	res := bgtasktest.Run(t, bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
		inst.Go(func(ctx context.Context) error {
			inst.SetProgress(100)
			return ctx.Err() // done already: the cancellation happened inside SetProgress
		})
		return nil
	}), bgtasktest.CancelAtProgress(100, bgtask.EnergySaver))
	assert.ErrorIs(t, res.Err, context.Canceled)
	assert.Equal(t, bgtask.EnergySaver, res.Reason)
	assert.Equal(t, []uint32{100}, res.Progress)
}

func TestCanceledHandlerGetsTheTaskInstance(t *testing.T) {
	res := bgtasktest.Run(t, bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
		same := make(chan bool, 1)
		inst.OnCanceled(func(i bgtask.BackgroundTaskInstance, _ bgtask.CancellationReason) {
			i.SetProgress(99) // recorded too: i is the task's instance
			same <- i == inst
		})
		inst.SetProgress(1)
		if !<-same {
			return errors.New("the handler got another instance")
		}
		return nil
	}), bgtasktest.CancelAtProgress(1, bgtask.Abort))
	require.NoError(t, res.Err)
	assert.Equal(t, []uint32{1, 99}, res.Progress)
}

func TestCancelAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		res := bgtasktest.Run(t, bgtask.TaskFunc(func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
			<-ctx.Done()
			return context.Cause(ctx)
		}), bgtasktest.CancelAfter(10*time.Minute, bgtask.ServicingUpdate))
		assert.True(t, res.Canceled)
		assert.Equal(t, bgtask.ServicingUpdate, res.Reason)
		assert.Equal(t, 10*time.Minute, res.Finished.Sub(res.Started))
	})
}

func TestCancelAfterZero(t *testing.T) {
	res := bgtasktest.Run(t, bgtask.TaskFunc(func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
		return context.Cause(ctx) // done before Run was called
	}), bgtasktest.CancelAfter(0, bgtask.LoggingOff))
	var ce *bgtask.CanceledError
	require.ErrorAs(t, res.Err, &ce)
	assert.Equal(t, bgtask.LoggingOff, ce.Reason)
	assert.True(t, res.Canceled)
}

func TestCancelAfterNotReached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		res := bgtasktest.Run(t, steps(1), bgtasktest.CancelAfter(time.Hour, bgtask.Abort))
		require.NoError(t, res.Err)
		assert.False(t, res.Canceled)
		synctest.Wait()
		assert.Equal(t, start, time.Now(), "no time passed: the timer was stopped")
	})
}

func TestTaskErrorsDoNotFailTheTest(t *testing.T) {
	boom := errors.New("boom")
	cases := map[string]bgtask.TaskFunc{
		"error": func(context.Context, bgtask.BackgroundTaskInstance) error { return boom },
		"panic": func(context.Context, bgtask.BackgroundTaskInstance) error { panic(boom) },
	}
	for name, task := range cases {
		t.Run(name, func(t *testing.T) {
			rec := &recordTB{TB: t}
			res := bgtasktest.Run(rec, task)
			assert.ErrorIs(t, res.Err, boom)
			errs, fatals := rec.failures()
			assert.Empty(t, errs)
			assert.Empty(t, fatals)
		})
	}
}

func TestTerminatedFailsTheTest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		lines := make(chan [2]int, 1)
		rec := &recordTB{TB: t}
		res := bgtasktest.Run(rec, bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			_, deferralLine := inst.GetDeferral(), line() // never completed
			goLine := line() + 1
			inst.Go(func(context.Context) error { <-release; return nil }) // deaf to its context
			lines <- [2]int{deferralLine, goLine}
			return nil
		}), bgtasktest.CancelAfter(time.Second, bgtask.Abort))
		close(release)
		l := <-lines

		assert.True(t, res.Terminated)
		assert.ErrorIs(t, res.Err, bgtask.ErrTerminated)
		assert.Equal(t, time.Second+bgtask.DefaultGracePeriod, res.Finished.Sub(res.Started))
		errs, fatals := rec.failures()
		assert.Empty(t, fatals)
		require.Len(t, errs, 1, "one failure: the shutdown error, which names the instance again, is not reported")
		assert.Contains(t, errs[0], "canceled with Abort, it did not finish within its grace period")
		assert.Contains(t, errs[0], "Run had returned")
		assert.Contains(t, errs[0], fmt.Sprintf("deferral not completed, taken at bgtasktest_test.go:%d", l[0]))
		assert.Contains(t, errs[0], fmt.Sprintf("Go func still running, started at bgtasktest_test.go:%d", l[1]))
	})
}

func TestTerminatedRunNotReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		rec := &recordTB{TB: t}
		res := bgtasktest.Run(rec, bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error {
			<-release
			return nil
		}), bgtasktest.CancelAtProgress(0, bgtask.Abort), bgtasktest.CancelAfter(0, bgtask.SystemPolicy),
			bgtasktest.WithPolicy(bgtask.Policy{GracePeriod: time.Second}))
		close(release)
		assert.True(t, res.Terminated)
		assert.Equal(t, time.Second, res.Finished.Sub(res.Started), "the policy's grace period")
		errs, _ := rec.failures()
		require.Len(t, errs, 1)
		assert.Contains(t, errs[0], "canceled with SystemPolicy")
		assert.Contains(t, errs[0], "Run had not returned")
	})
}

func TestLogGoesToTheTestWhileRunRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recordTB{TB: t}
		release := make(chan struct{})
		after := make(chan struct{})
		bgtasktest.Run(rec, bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			<-release
			inst.Go(func(context.Context) error { return nil }) // after the end: logged
			close(after)
			return nil
		}), bgtasktest.CancelAfter(0, bgtask.Abort), bgtasktest.WithPolicy(bgtask.Policy{GracePeriod: time.Second}))
		rec.mu.Lock()
		logs := strings.Join(rec.logs, "\n")
		rec.mu.Unlock()
		close(release)
		<-after
		assert.Contains(t, logs, "terminated", "the host's log of the termination")
		rec.mu.Lock()
		defer rec.mu.Unlock()
		assert.Equal(t, logs, strings.Join(rec.logs, "\n"), "nothing logged after Run returned")
	})
}

func TestBadUseFailsTheTest(t *testing.T) {
	task := steps(1)
	cases := []struct {
		name string
		task bgtask.BackgroundTask
		opts []bgtasktest.Option
		want string
	}{
		{"nil task", nil, nil, "nil task"},
		{"nil TaskFunc", bgtask.TaskFunc(nil), nil, "nil task"},
		{"args and details", task, []bgtasktest.Option{bgtasktest.WithArgs(nil), bgtasktest.WithDetails(1)}, "WithDetails after WithArgs"},
		{"details and args", task, []bgtasktest.Option{bgtasktest.WithDetails(1), bgtasktest.WithArgs(nil)}, "WithArgs after WithDetails"},
		{"args twice", task, []bgtasktest.Option{bgtasktest.WithArgs(nil), bgtasktest.WithArgs(nil)}, "WithArgs after WithArgs"},
		{"policy twice", task, []bgtasktest.Option{bgtasktest.WithPolicy(bgtask.Policy{}), bgtasktest.WithPolicy(bgtask.Policy{})}, "WithPolicy given twice"},
		{"bad policy", task, []bgtasktest.Option{bgtasktest.WithPolicy(bgtask.Policy{GracePeriod: -time.Second})}, "GracePeriod"},
		{"progress twice", task, []bgtasktest.Option{bgtasktest.CancelAtProgress(1, bgtask.Abort), bgtasktest.CancelAtProgress(2, bgtask.Abort)}, "CancelAtProgress given twice"},
		{"unknown reason", task, []bgtasktest.Option{bgtasktest.CancelAtProgress(1, 99)}, "unknown cancellation reason CancellationReason(99)"},
		{"after twice", task, []bgtasktest.Option{bgtasktest.CancelAfter(1, bgtask.Abort), bgtasktest.CancelAfter(1, bgtask.Abort)}, "CancelAfter given twice"},
		{"negative after", task, []bgtasktest.Option{bgtasktest.CancelAfter(-time.Second, bgtask.Abort)}, "CancelAfter: negative duration -1s"},
		{"after, unknown reason", task, []bgtasktest.Option{bgtasktest.CancelAfter(time.Second, -1)}, "unknown cancellation reason"},
		{"zero option", task, []bgtasktest.Option{bgtasktest.WithArgs(nil), {}}, "option 1 is the zero Option"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &recordTB{TB: t}
			var res bgtasktest.Result
			require.NotPanics(t, func() { res = bgtasktest.Run(rec, c.task, c.opts...) })
			errs, fatals := rec.failures()
			assert.Empty(t, errs)
			require.Len(t, fatals, 1)
			assert.Contains(t, fatals[0], "bgtasktest: ")
			assert.Contains(t, fatals[0], c.want)
			assert.Zero(t, res.Started, "nothing ran")
		})
	}
}

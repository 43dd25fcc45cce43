package bgtask_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

func TestFinishesOnlyAfterRunAndEveryDeferral(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		defs := make(chan [2]*bgtask.Deferral, 1)
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			defs <- [2]*bgtask.Deferral{inst.GetDeferral(), inst.GetDeferral()}
			return nil
		})
		f.request(t, nil)
		d := <-defs
		synctest.Wait()
		assert.False(t, f.pending(), "completed with two deferrals open")

		d[0].Complete()
		d[0].Complete() // a second Complete must not release the other deferral
		synctest.Wait()
		assert.False(t, f.pending(), "completed with one deferral open")

		d[1].Complete()
		e := <-f.done
		assert.NoError(t, e.Err)
		assert.False(t, e.Canceled)
		synctest.Wait()
		assert.False(t, f.pending(), "completed twice")
		f.shutdown(t)
	})
}

func TestFinishesOnlyAfterRunReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.GetDeferral().Complete()
			<-release
			return nil
		})
		f.request(t, nil)
		synctest.Wait()
		assert.False(t, f.pending(), "completed while Run had not returned")
		close(release)
		<-f.done
		f.shutdown(t)
	})
}

func TestGetDeferralAfterFinishIsInert(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		insts := make(chan bgtask.BackgroundTaskInstance, 1)
		f := newFixture(t, started(insts, nil))
		f.request(t, nil)
		inst := <-insts
		<-f.done
		d := inst.GetDeferral()
		d.Complete()
		var ran atomic.Bool
		inst.Go(func(context.Context) error { ran.Store(true); return nil })
		synctest.Wait()
		assert.False(t, f.pending(), "a late deferral revived the instance")
		assert.False(t, ran.Load(), "Go ran after the end")
		var zero bgtask.Deferral
		zero.Complete() // the zero value is inert
		f.shutdown(t)
	})
}

func TestCancellationHappensOnceWithOneReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		reasons := make(chan bgtask.CancellationReason, 4)
		causes := make(chan error, 1)
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.OnCanceled(func(inst bgtask.BackgroundTaskInstance, r bgtask.CancellationReason) {
				// The context is canceled before handlers run.
				if inst.Context().Err() != nil {
					calls.Add(1)
				}
				reasons <- r
			})
			d := inst.GetDeferral()
			go func() {
				<-ctx.Done()
				causes <- context.Cause(ctx)
				d.Complete()
			}()
			return nil
		})
		f.request(t, nil)
		synctest.Wait()
		f.host.Cancel(bgtask.LoggingOff)
		f.host.Cancel(bgtask.EnergySaver)
		f.reg.Unregister(true)
		e := <-f.done
		assert.True(t, e.Canceled)
		assert.Equal(t, bgtask.LoggingOff, e.Reason)
		cause := <-causes
		var ce *bgtask.CanceledError
		require.ErrorAs(t, cause, &ce)
		assert.Equal(t, bgtask.LoggingOff, ce.Reason)
		assert.ErrorIs(t, cause, bgtask.ErrCanceled)
		synctest.Wait()
		assert.Equal(t, int32(1), calls.Load())
		assert.Len(t, reasons, 1)
		f.shutdown(t)
	})
}

func TestLateOnCanceledStillFiresOnLibraryGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		insts := make(chan bgtask.BackgroundTaskInstance, 1)
		f := newFixture(t, started(insts, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			<-ctx.Done()
			return context.Cause(ctx)
		}))
		f.request(t, nil)
		inst := <-insts
		f.host.Cancel(bgtask.ServicingUpdate)
		e := <-f.done
		assert.ErrorIs(t, e.Err, bgtask.ErrCanceled)

		// If OnCanceled called the handler itself, it would wait forever for token, which is
		// sent only after OnCanceled returns: synctest would report the deadlock.
		token := make(chan struct{})
		got := make(chan bgtask.CancellationReason, 1)
		inst.OnCanceled(func(_ bgtask.BackgroundTaskInstance, r bgtask.CancellationReason) {
			<-token
			got <- r
		})
		token <- struct{}{}
		assert.Equal(t, bgtask.ServicingUpdate, <-got)
		f.shutdown(t)
	})
}

func TestRemovedCanceledHandlerIsNotCalled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var called atomic.Bool
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			remove := inst.OnCanceled(func(bgtask.BackgroundTaskInstance, bgtask.CancellationReason) { called.Store(true) })
			remove()
			inst.OnCanceled(nil)()
			<-ctx.Done()
			return nil
		})
		f.request(t, nil)
		synctest.Wait()
		f.host.Cancel(bgtask.Abort)
		<-f.done
		synctest.Wait()
		assert.False(t, called.Load())
		f.shutdown(t)
	})
}

func TestGracePeriodThenTerminated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		insts := make(chan bgtask.BackgroundTaskInstance, 1)
		f := newFixture(t, started(insts, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			if inst.TriggerDetails().(*bgtask.ApplicationTriggerDetails).Arguments["hold"] == true {
				inst.GetDeferral() // never completed
			}
			<-release // ignores cancellation
			return errors.New("too late")
		}), bgtask.WithPolicy(bgtask.Policy{GracePeriod: 2 * time.Second}))
		f.request(t, map[string]any{"hold": true})
		inst := <-insts
		start := time.Now()
		f.host.Cancel(bgtask.SystemPolicy)
		time.Sleep(2*time.Second - time.Nanosecond)
		synctest.Wait()
		assert.False(t, f.pending(), "terminated before the grace period ended")

		e := <-f.done
		assert.Equal(t, 2*time.Second, time.Since(start))
		require.ErrorIs(t, e.Err, bgtask.ErrTerminated)
		assert.ErrorIs(t, e.Err, bgtask.ErrCanceled)
		var te *bgtask.TerminatedError
		require.ErrorAs(t, e.Err, &te)
		assert.False(t, te.RunReturned)
		assert.Equal(t, 1, te.Deferrals)
		assert.Equal(t, bgtask.SystemPolicy, te.Canceled.Reason)
		assert.Contains(t, e.Err.Error(), "Run had not returned, 1 deferral(s) outstanding")
		assert.True(t, e.Canceled)
		assert.Equal(t, bgtask.SystemPolicy, e.Reason)
		assert.Contains(t, f.log.String(), "instance terminated")

		// Its deferrals are inert and the registration is free for a new instance.
		inst.GetDeferral().Complete()
		f.request(t, nil)
		<-insts
		close(release)
		second := <-f.done
		assert.EqualError(t, second.Err, "too late")
		synctest.Wait()
		assert.False(t, f.pending())
		f.shutdown(t)
	})
}

func TestTerminatedAfterRunReturnedCountsDeferrals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var held [3]*bgtask.Deferral
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			for k := range held {
				held[k] = inst.GetDeferral()
			}
			held[0].Complete()
			return nil
		})
		f.request(t, nil)
		synctest.Wait()
		f.host.Cancel(bgtask.Abort)
		e := <-f.done
		var te *bgtask.TerminatedError
		require.ErrorAs(t, e.Err, &te)
		assert.True(t, te.RunReturned)
		assert.Equal(t, 2, te.Deferrals)
		held[1].Complete()
		held[2].Complete()
		synctest.Wait()
		assert.False(t, f.pending(), "completing a terminated instance's deferrals raised Completed again")
		f.shutdown(t)
	})
}

func TestUnregister(t *testing.T) {
	for _, cancelTask := range []bool{true, false} {
		t.Run(map[bool]string{true: "cancel", false: "let finish"}[cancelTask], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
					select {
					case <-ctx.Done():
						return context.Cause(ctx)
					case <-release:
						return nil
					}
				})
				f.request(t, nil)
				synctest.Wait()
				f.reg.Unregister(cancelTask)
				f.reg.Unregister(cancelTask)
				res, err := f.trig.Request(context.Background(), nil)
				require.NoError(t, err)
				assert.Equal(t, bgtask.DisabledByPolicy, res)
				_, ok := f.host.Lookup(f.reg.TaskID())
				assert.False(t, ok)
				if !cancelTask {
					synctest.Wait()
					assert.False(t, f.pending(), "Unregister(false) stopped the instance")
					close(release)
				}
				e := <-f.done
				assert.Equal(t, cancelTask, e.Canceled)
				if cancelTask {
					assert.Equal(t, bgtask.Abort, e.Reason)
				} else {
					assert.NoError(t, e.Err)
				}
				f.shutdown(t)
			})
		})
	}
}

func TestMaxExecutionTime(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   time.Duration
		builder  time.Duration
		want     time.Duration
		runWaits bool // Run waits itself; otherwise it returns leaving a deferral
	}{
		{"policy, Run waiting", 3 * time.Second, 0, 3 * time.Second, true},
		{"policy, deferral pending", 3 * time.Second, 0, 3 * time.Second, false},
		{"builder overrides policy", 3 * time.Second, time.Second, time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h, err := bgtask.NewHost(bgtask.WithPolicy(bgtask.Policy{MaxExecutionTime: tc.policy}))
				require.NoError(t, err)
				trig := bgtask.NewApplicationTrigger()
				reg, err := h.Register(bgtask.Builder{Name: "slow", Trigger: trig, MaxExecutionTime: tc.builder,
					Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
						if tc.runWaits {
							<-ctx.Done()
							return context.Cause(ctx)
						}
						d := inst.GetDeferral()
						context.AfterFunc(ctx, d.Complete)
						return nil
					})})
				require.NoError(t, err)
				done := make(chan bgtask.CompletedEventArgs, 1)
				reg.OnCompleted(func(e bgtask.CompletedEventArgs) { done <- e })
				start := time.Now()
				_, err = trig.Request(context.Background(), nil)
				require.NoError(t, err)
				e := <-done
				assert.Equal(t, tc.want, time.Since(start))
				assert.True(t, e.Canceled)
				assert.Equal(t, bgtask.ExecutionTimeExceeded, e.Reason)
				require.NoError(t, h.Shutdown(context.Background()))
			})
		})
	}
}

func TestPanicsAreRecovered(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		task bgtask.TaskFunc
		want any
	}{
		{"in Run", func(context.Context, bgtask.BackgroundTaskInstance) error { panic("run") }, "run"},
		{"in Go", func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.Go(func(context.Context) error { panic(boom) })
			return nil
		}, boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, tc.task)
				f.request(t, nil)
				e := <-f.done
				var pe *bgtask.PanicError
				require.ErrorAs(t, e.Err, &pe)
				assert.Equal(t, tc.want, pe.Value)
				assert.NotEmpty(t, pe.Stack)
				if err, ok := tc.want.(error); ok {
					assert.ErrorIs(t, e.Err, err)
				}
				// The host keeps working.
				f.request(t, nil)
				<-f.done
				f.shutdown(t)
			})
		})
	}
}

func TestPanicInHandlersIsLoggedAndOthersRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var canceled, progressed atomic.Int32
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.OnCanceled(func(bgtask.BackgroundTaskInstance, bgtask.CancellationReason) { panic("canceled handler") })
			inst.OnCanceled(func(bgtask.BackgroundTaskInstance, bgtask.CancellationReason) { canceled.Add(1) })
			inst.SetProgress(10)
			<-ctx.Done()
			return nil
		})
		f.reg.OnProgress(func(bgtask.ProgressEventArgs) { panic("progress handler") })
		f.reg.OnProgress(func(bgtask.ProgressEventArgs) { progressed.Add(1) })
		f.reg.OnCompleted(func(bgtask.CompletedEventArgs) { panic("completed handler") })
		f.request(t, nil)
		synctest.Wait()
		f.host.Cancel(bgtask.Abort)
		e := <-f.done // registered before the panicking Completed handler
		assert.NoError(t, e.Err)
		f.shutdown(t)
		assert.Equal(t, int32(1), canceled.Load())
		assert.Equal(t, int32(1), progressed.Load())
		for _, s := range []string{"canceled handler", "progress handler", "completed handler", "task=task", "instance=" + e.InstanceID.String()} {
			assert.Contains(t, f.log.String(), s)
		}
	})
}

func TestFirstErrorIsTheResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first, second := errors.New("first"), errors.New("second")
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.Go(func(context.Context) error { return first })
			time.Sleep(time.Second) // in the bubble: returns once the Go func has returned
			inst.Go(func(context.Context) error { return nil })
			return second
		})
		f.request(t, nil)
		e := <-f.done
		assert.ErrorIs(t, e.Err, first)
		assert.NotErrorIs(t, e.Err, second)
		assert.Equal(t, e.Err, e.CheckResult())
		f.shutdown(t)
	})
}

func TestGoRunsUnderADeferral(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.Go(func(ctx context.Context) error { <-release; return nil })
			inst.Go(nil)
			return nil
		})
		f.request(t, nil)
		synctest.Wait()
		assert.False(t, f.pending(), "completed while a Go func ran")
		close(release)
		assert.NoError(t, (<-f.done).Err)
		f.shutdown(t)
	})
}

func TestInstanceAccessors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		insts := make(chan bgtask.BackgroundTaskInstance, 2)
		ctxs := make(chan context.Context, 2)
		f := newFixture(t, started(insts, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			assert.Zero(t, inst.Progress(), "0 before SetProgress")
			inst.SetProgress(7)
			assert.Equal(t, uint32(7), inst.Progress())
			ctxs <- ctx
			return inst.Checkpoint()
		}))
		f.request(t, map[string]any{"n": 1})
		a := <-insts
		assert.Same(t, f.reg, a.Task())
		assert.Equal(t, uint32(0), a.SuspendedCount())
		assert.Equal(t, <-ctxs, a.Context())
		e := <-f.done
		assert.Equal(t, e.InstanceID, a.InstanceID())
		assert.Equal(t, uint32(7), a.Progress(), "kept after the end")
		assert.Equal(t, uint32(7), e.Progress)
		f.request(t, nil)
		b := <-insts
		<-ctxs
		<-f.done
		assert.NotEqual(t, a.InstanceID(), b.InstanceID(), "InstanceID must be new for every run")
		f.shutdown(t)
	})
}

func TestCheckpointReportsCancellation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errs := make(chan error, 2)
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			errs <- inst.Checkpoint()
			<-ctx.Done()
			errs <- inst.Checkpoint()
			return nil
		})
		f.request(t, nil)
		assert.NoError(t, <-errs)
		f.host.Cancel(bgtask.QuietHoursEntered)
		err := <-errs
		var ce *bgtask.CanceledError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, bgtask.QuietHoursEntered, ce.Reason)
		<-f.done
		f.shutdown(t)
	})
}

// Handlers run with no lock of the library held: they may call back into the host.
func TestHandlersMayCallTheHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		again := make(chan bgtask.ApplicationTriggerResult, 4)
		var f *fixture
		f = newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.OnCanceled(func(bgtask.BackgroundTaskInstance, bgtask.CancellationReason) {
				f.host.Cancel(bgtask.Abort)
				_ = f.host.AllTasks()
			})
			if inst.TriggerDetails().(*bgtask.ApplicationTriggerDetails).Arguments == nil {
				<-ctx.Done()
			}
			return nil
		})
		f.reg.OnProgress(func(bgtask.ProgressEventArgs) { f.host.Suspend(); f.host.Resume() })
		f.reg.OnCompleted(func(e bgtask.CompletedEventArgs) {
			if e.Canceled {
				res, _ := f.trig.Request(context.Background(), map[string]any{"second": true})
				again <- res
			}
		})
		f.request(t, nil)
		synctest.Wait()
		f.host.Cancel(bgtask.LoggingOff)
		assert.Equal(t, bgtask.Allowed, <-again, "the registration is free when Completed is raised")
		<-f.done
		<-f.done
		f.shutdown(t)
	})
}

// When Completed is raised the registration is free, whichever goroutine ended the
// instance: here the last deferral is completed by the test's goroutine. The test runs
// outside a bubble, many times, so that the delivery goroutine races the end for real.
func TestRegistrationIsFreeWhenCompletedIsRaised(t *testing.T) {
	for range 200 {
		defs := make(chan *bgtask.Deferral, 1)
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			if inst.TriggerDetails().(*bgtask.ApplicationTriggerDetails).Arguments == nil {
				defs <- inst.GetDeferral()
			}
			return nil
		})
		again := make(chan bgtask.ApplicationTriggerResult, 1)
		var once sync.Once
		f.reg.OnCompleted(func(e bgtask.CompletedEventArgs) {
			once.Do(func() { again <- must(f.trig.Request(context.Background(), map[string]any{"second": true})) })
		})
		f.request(t, nil)
		(<-defs).Complete()
		require.Equal(t, bgtask.Allowed, <-again)
		<-f.done
		<-f.done
		f.shutdown(t)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestTerminatedCountsGoFuncsStillRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		boom := errors.New("boom")
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			for range 2 {
				inst.Go(func(context.Context) error { <-release; return nil })
			}
			inst.Go(func(context.Context) error { return boom })
			return nil
		})
		f.request(t, nil)
		synctest.Wait()
		f.host.Cancel(bgtask.Abort)
		e := <-f.done
		var te *bgtask.TerminatedError
		require.ErrorAs(t, e.Err, &te)
		assert.True(t, te.RunReturned)
		assert.Equal(t, 2, te.Deferrals, "each Go func holds a deferral")
		assert.Equal(t, 2, te.GoRunning)
		assert.Contains(t, te.Error(), "2 Go func(s) running")
		assert.Same(t, boom, te.Err, "the error reported before termination")
		assert.ErrorIs(t, e.Err, boom)
		close(release)
		synctest.Wait()
		f.shutdown(t)
	})
}

package bgtask_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

// Tests for "Part 2: Exact results" of the design.

// waitsForCancel is a task that returns once its instance is canceled.
var waitsForCancel = bgtask.TaskFunc(func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
	<-ctx.Done()
	return nil
})

// returnsAtOnce is a task that returns nil at once.
var returnsAtOnce = bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })

// mustRequest fires trig and requires the fire to be accepted.
func mustRequest(t *testing.T, trig *bgtask.ApplicationTrigger) {
	t.Helper()
	res, err := trig.Request(context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, bgtask.Allowed, res)
}

// callerLine returns the line it is called from.
func callerLine() int {
	_, _, line, _ := runtime.Caller(1)
	return line
}

// copyDeferral copies *d through reflect, which go vet's copylocks check does not see.
func copyDeferral(d *bgtask.Deferral) *bgtask.Deferral {
	cp := reflect.New(reflect.TypeOf(d).Elem())
	cp.Elem().Set(reflect.ValueOf(d).Elem())
	return cp.Interface().(*bgtask.Deferral)
}

// Point 14: the context ends with the instance.

func TestContextEndsWithErrFinished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		insts := make(chan bgtask.BackgroundTaskInstance, 1)
		causes := make(chan error, 1)
		f := newFixture(t, started(insts, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			go func() { // a goroutine the library does not know of
				<-ctx.Done()
				causes <- context.Cause(ctx)
			}()
			return nil
		}))
		f.request(t, nil)
		inst := <-insts
		require.NoError(t, (<-f.done).Err)
		assert.Same(t, bgtask.ErrFinished, <-causes, "the plain goroutine ends with the instance")
		assert.Error(t, inst.Context().Err())
		assert.Same(t, bgtask.ErrFinished, context.Cause(inst.Context()))
		assert.Same(t, bgtask.ErrFinished, inst.Checkpoint())
		f.host.Suspend()
		assert.Same(t, bgtask.ErrFinished, inst.Checkpoint(), "Checkpoint after the end does not block while suspended")
		f.host.Resume()
		f.shutdown(t)
	})
}

func TestContextCauseStaysTheCancellation(t *testing.T) {
	for _, tc := range []struct {
		name       string
		terminated bool // the task ignores the cancellation
	}{
		{"finished after cancellation", false},
		{"terminated", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				insts := make(chan bgtask.BackgroundTaskInstance, 1)
				f := newFixture(t, started(insts, func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
					if tc.terminated {
						<-release
					} else {
						<-ctx.Done()
					}
					return nil
				}), bgtask.WithPolicy(bgtask.Policy{GracePeriod: time.Second}))
				f.request(t, nil)
				inst := <-insts
				f.host.Cancel(bgtask.EnergySaver)
				e := <-f.done
				assert.Equal(t, tc.terminated, errors.Is(e.Err, bgtask.ErrTerminated))
				cause := context.Cause(inst.Context())
				var ce *bgtask.CanceledError
				require.ErrorAs(t, cause, &ce)
				assert.Equal(t, bgtask.EnergySaver, ce.Reason)
				assert.Same(t, cause, inst.Checkpoint())
				close(release)
				synctest.Wait()
				f.shutdown(t)
			})
		})
	}
}

// Point 15: every accepted fire ends in exactly one Completed event.

func TestDroppedFireRaisesOneCompleted(t *testing.T) {
	shutdown := func(t *testing.T, h *bgtask.Host, _ *bgtask.Registration) {
		require.NoError(t, h.Shutdown(context.Background()))
	}
	heldByCondition := func(requests int) func(*testing.T, *bgtask.Host, bgtask.TaskFunc) *bgtask.Registration {
		return func(t *testing.T, h *bgtask.Host, task bgtask.TaskFunc) *bgtask.Registration {
			trig := bgtask.NewApplicationTrigger()
			r := mustRegister(t, h, bgtask.Builder{Name: "b", Task: task, Trigger: trig,
				Conditions: []bgtask.Condition{bgtask.NewCondition(false)}})
			for range requests {
				mustRequest(t, trig)
			}
			return r
		}
	}
	for _, tc := range []struct {
		name   string
		policy bgtask.Policy
		// hold registers "b" on h and leaves an accepted fire of it held.
		hold   func(t *testing.T, h *bgtask.Host, task bgtask.TaskFunc) *bgtask.Registration
		drop   func(t *testing.T, h *bgtask.Host, r *bgtask.Registration)
		reason bgtask.CancellationReason
	}{
		{
			name:   "waiting for a MaxConcurrent slot, dropped by Shutdown",
			policy: bgtask.Policy{MaxConcurrent: 1},
			hold: func(t *testing.T, h *bgtask.Host, task bgtask.TaskFunc) *bgtask.Registration {
				a := bgtask.NewApplicationTrigger()
				mustRegister(t, h, bgtask.Builder{Name: "a", Task: task, Trigger: a})
				mustRequest(t, a) // runs until canceled
				b := bgtask.NewApplicationTrigger()
				r := mustRegister(t, h, bgtask.Builder{Name: "b", Task: task, Trigger: b})
				mustRequest(t, b)
				return r
			},
			drop:   shutdown,
			reason: bgtask.Terminating,
		},
		{
			name:   "held by a condition, dropped by Unregister",
			hold:   heldByCondition(1),
			drop:   func(_ *testing.T, _ *bgtask.Host, r *bgtask.Registration) { r.Unregister(false) },
			reason: bgtask.Abort,
		},
		{
			name:   "two Requests coalesced while held, dropped by Shutdown",
			hold:   heldByCondition(2),
			drop:   shutdown,
			reason: bgtask.Terminating,
		},
		{
			name: "system fire held while its instance runs, dropped by Shutdown",
			hold: func(t *testing.T, h *bgtask.Host, task bgtask.TaskFunc) *bgtask.Registration {
				r := mustRegister(t, h, bgtask.Builder{Name: "b", Task: task,
					Trigger: &bgtask.SystemTrigger{Type: bgtask.SystemTriggerTimeZoneChange}})
				h.Signal(bgtask.SystemTriggerTimeZoneChange) // starts the instance
				h.Signal(bgtask.SystemTriggerTimeZoneChange) // held
				return r
			},
			drop:   shutdown,
			reason: bgtask.Terminating,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHost(t, bgtask.WithPolicy(tc.policy))
				ids := make(chan uuid.UUID, 8)
				task := func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
					ids <- inst.InstanceID()
					return waitsForCancel(ctx, inst)
				}
				r := tc.hold(t, h, task)
				events := make(chan bgtask.CompletedEventArgs, 8)
				r.OnCompleted(func(e bgtask.CompletedEventArgs) { events <- e })
				tc.drop(t, h, r)
				synctest.Wait()
				var dropped []bgtask.CompletedEventArgs
				for len(events) > 0 {
					if e := <-events; e.Started.IsZero() {
						dropped = append(dropped, e)
					}
				}
				require.NoError(t, h.Shutdown(context.Background()))
				synctest.Wait()
				for len(events) > 0 {
					assert.False(t, (<-events).Started.IsZero(), "a second event for the dropped fire")
				}

				require.Len(t, dropped, 1)
				e := dropped[0]
				assert.True(t, e.Canceled)
				assert.Equal(t, tc.reason, e.Reason)
				var ce *bgtask.CanceledError
				require.ErrorAs(t, e.Err, &ce)
				assert.Equal(t, tc.reason, ce.Reason)
				assert.ErrorIs(t, e.Err, bgtask.ErrCanceled)
				assert.False(t, e.Finished.IsZero())
				assert.NotEqual(t, uuid.Nil, e.InstanceID)
				close(ids)
				for id := range ids {
					assert.NotEqual(t, id, e.InstanceID, "a fresh InstanceID")
				}
			})
		})
	}
}

func TestCompletedCarriesStartedAndFinished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		online := bgtask.NewCondition(false)
		trig := bgtask.NewApplicationTrigger()
		r := mustRegister(t, h, bgtask.Builder{Name: "timed", Trigger: trig, Conditions: []bgtask.Condition{online},
			Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error {
				time.Sleep(3 * time.Second)
				return nil
			})})
		done := make(chan bgtask.CompletedEventArgs, 1)
		r.OnCompleted(func(e bgtask.CompletedEventArgs) { done <- e })
		fired := time.Now()
		mustRequest(t, trig)
		time.Sleep(10 * time.Second)
		online.Set(true)
		e := <-done
		assert.Equal(t, 10*time.Second, e.Started.Sub(fired), "Started is when Run was called, not when the fire came")
		assert.Equal(t, 3*time.Second, e.Finished.Sub(e.Started))
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

// Point 16: Instances and CancelInstance.

func TestInstancesReportsEachStateOldestFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithPolicy(bgtask.Policy{GracePeriod: 10 * time.Second}))
		release := make(chan struct{})
		insts := make(chan bgtask.BackgroundTaskInstance, 1)
		defs := make(chan *bgtask.Deferral, 1)
		ignoresCancel := func(context.Context, bgtask.BackgroundTaskInstance) error { <-release; return nil }
		tasks := map[string]bgtask.TaskFunc{
			"terminated": ignoresCancel,
			"running": func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
				inst.SetProgress(7)
				<-ctx.Done()
				return nil
			},
			"draining": func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
				defs <- inst.GetDeferral()
				inst.Go(func(context.Context) error { <-release; return nil })
				return nil
			},
			"canceling": ignoresCancel,
		}
		names := []string{"terminated", "running", "draining", "canceling"}
		ids := map[string]uuid.UUID{}
		for _, name := range names {
			trig := bgtask.NewApplicationTrigger()
			mustRegister(t, h, bgtask.Builder{Name: name, Trigger: trig, Task: started(insts, tasks[name])})
			_, err := trig.Request(context.Background(), map[string]any{"name": name})
			require.NoError(t, err)
			ids[name] = (<-insts).InstanceID()
			if name == "terminated" {
				require.True(t, h.CancelInstance(ids[name], bgtask.ServicingUpdate))
				time.Sleep(10 * time.Second) // the grace period
			}
		}
		d := <-defs
		synctest.Wait()
		require.True(t, h.CancelInstance(ids["canceling"], bgtask.LoggingOff))
		h.Suspend()
		h.Resume()

		infos := h.Instances()
		require.Len(t, infos, 4)
		for k, in := range infos {
			assert.Equal(t, names[k], in.Task.Name(), "oldest first")
			assert.Equal(t, ids[names[k]], in.InstanceID)
			assert.Equal(t, names[k], in.Details.(*bgtask.ApplicationTriggerDetails).Arguments["name"])
			assert.False(t, in.Started.IsZero())
		}
		term, running, draining, canceling := infos[0], infos[1], infos[2], infos[3]
		assert.Equal(t, bgtask.InstanceTerminated, term.State)
		assert.Equal(t, bgtask.ServicingUpdate, term.Reason)
		assert.Zero(t, term.SuspendedCount, "suspended after it was terminated")

		assert.Equal(t, bgtask.InstanceRunning, running.State)
		assert.Equal(t, uint32(7), running.Progress)
		assert.Equal(t, uint32(1), running.SuspendedCount)
		assert.Empty(t, running.Deferrals, "Run's own hold is not a deferral")

		assert.Equal(t, bgtask.InstanceDraining, draining.State)
		require.Len(t, draining.Deferrals, 2)
		assert.ElementsMatch(t, []bool{false, true}, []bool{draining.Deferrals[0].Go, draining.Deferrals[1].Go})

		assert.Equal(t, bgtask.InstanceCanceling, canceling.State)
		assert.Equal(t, bgtask.LoggingOff, canceling.Reason)
		assert.Equal(t, uint32(1), canceling.SuspendedCount)

		close(release)
		d.Complete()
		synctest.Wait()
		infos = h.Instances()
		require.Len(t, infos, 1, "the terminated, draining and canceling instances are gone")
		assert.Equal(t, ids["running"], infos[0].InstanceID)
		require.NoError(t, h.Shutdown(context.Background()))
		assert.Empty(t, h.Instances())
	})
}

func TestInstanceStateStrings(t *testing.T) {
	for s, want := range map[bgtask.InstanceState]string{
		bgtask.InstanceRunning:    "Running",
		bgtask.InstanceDraining:   "Draining",
		bgtask.InstanceCanceling:  "Canceling",
		bgtask.InstanceTerminated: "Terminated",
		bgtask.InstanceState(9):   "InstanceState(9)",
	} {
		assert.Equal(t, want, s.String())
	}
}

func TestCancelInstanceCancelsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		insts := make(chan bgtask.BackgroundTaskInstance, 1)
		proceed := make(chan struct{})
		f := newFixture(t, started(insts, func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
			<-ctx.Done()
			<-proceed
			return nil
		}))
		f.request(t, nil)
		id := (<-insts).InstanceID()
		assert.False(t, f.host.CancelInstance(uuid.New(), bgtask.Abort), "an unknown instance")
		assert.True(t, f.host.CancelInstance(id, bgtask.QuietHoursEntered))
		assert.False(t, f.host.CancelInstance(id, bgtask.Abort), "an instance already canceled")
		close(proceed)
		e := <-f.done
		assert.True(t, e.Canceled)
		assert.Equal(t, bgtask.QuietHoursEntered, e.Reason)
		assert.False(t, f.host.CancelInstance(id, bgtask.Abort), "a finished instance")
		f.shutdown(t)
	})
}

// Point 17: deferral sites.

func TestDeferralSites(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("sites %v", on), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				lines := make(chan [2]int, 1)
				f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
					d, line := inst.GetDeferral(), callerLine()
					goLine := callerLine() + 1
					inst.Go(func(context.Context) error { <-release; d.Complete(); return nil })
					lines <- [2]int{line, goLine}
					return nil
				}, bgtask.WithDeferralSites(on))
				f.request(t, nil)
				l := <-lines
				synctest.Wait()
				infos := f.host.Instances()
				require.Len(t, infos, 1)
				ds := infos[0].Deferrals
				require.Len(t, ds, 2)
				if on {
					assert.Equal(t, fmt.Sprintf("exact_test.go:%d", l[0]), ds[0].Site, "GetDeferral's site")
					assert.Equal(t, fmt.Sprintf("exact_test.go:%d", l[1]), ds[1].Site, "Go's site")
					assert.False(t, ds[0].Go)
					assert.True(t, ds[1].Go)
				}
				for _, d := range ds {
					assert.Equal(t, on, d.Site != "", "Site %q", d.Site)
					assert.Equal(t, on, !d.Taken.IsZero(), "Taken %v", d.Taken)
				}
				close(release)
				<-f.done
				f.shutdown(t)
			})
		})
	}
}

func TestTerminationAndShutdownErrorsNameDeferralSites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sites := make(chan string, 1)
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			_, line := inst.GetDeferral(), callerLine() // never completed
			sites <- fmt.Sprintf("exact_test.go:%d", line)
			return nil
		}, bgtask.WithDeferralSites(true), bgtask.WithPolicy(bgtask.Policy{GracePeriod: time.Second}))
		f.request(t, nil)
		site := <-sites
		err := f.host.Shutdown(context.Background())
		e := <-f.done
		var te *bgtask.TerminatedError
		require.ErrorAs(t, e.Err, &te)
		require.Len(t, te.Outstanding, 1)
		assert.Equal(t, site, te.Outstanding[0].Site)
		assert.Contains(t, te.Error(), site)
		var se *bgtask.ShutdownError
		require.ErrorAs(t, err, &se)
		require.Len(t, se.Instances, 1)
		require.Len(t, se.Instances[0].Deferrals, 1)
		assert.Equal(t, site, se.Instances[0].Deferrals[0].Site)
		assert.Contains(t, err.Error(), site)
	})
}

// Point 18: ShutdownError.

func TestShutdownErrorMatchesErrTerminatedOnlyForTerminatedInstances(t *testing.T) {
	for _, tc := range []struct {
		name           string
		policy         bgtask.Policy
		terminateFirst bool          // Shutdown after the instance was terminated
		timeout        time.Duration // Shutdown's; 0: none
		wantState      bgtask.InstanceState
		wantCtxErr     error
	}{
		{
			name:      "terminated during Shutdown",
			policy:    bgtask.Policy{GracePeriod: time.Second},
			wantState: bgtask.InstanceTerminated,
		},
		{
			name:           "terminated before Shutdown, its goroutine still running",
			policy:         bgtask.Policy{MaxExecutionTime: time.Second, GracePeriod: time.Second},
			terminateFirst: true,
			wantState:      bgtask.InstanceTerminated,
		},
		{
			name:       "abandoned in its grace period when ctx ended",
			policy:     bgtask.Policy{GracePeriod: 10 * time.Second},
			timeout:    time.Second,
			wantState:  bgtask.InstanceCanceling,
			wantCtxErr: context.DeadlineExceeded,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				defer close(release) // the task's goroutine outlives Shutdown
				insts := make(chan bgtask.BackgroundTaskInstance, 1)
				f := newFixture(t, started(insts, func(context.Context, bgtask.BackgroundTaskInstance) error {
					<-release
					return nil
				}), bgtask.WithPolicy(tc.policy))
				f.request(t, nil)
				id := (<-insts).InstanceID()
				if tc.terminateFirst {
					require.ErrorIs(t, (<-f.done).Err, bgtask.ErrTerminated)
				}
				ctx := context.Background()
				if tc.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.timeout)
					defer cancel()
				}
				err := f.host.Shutdown(ctx)
				var se *bgtask.ShutdownError
				require.ErrorAs(t, err, &se)
				require.Len(t, se.Instances, 1, "listed once")
				assert.Equal(t, id, se.Instances[0].InstanceID)
				assert.Equal(t, tc.wantState, se.Instances[0].State)
				assert.Equal(t, 1, strings.Count(err.Error(), id.String()), "named once")
				assert.Equal(t, tc.wantState == bgtask.InstanceTerminated, errors.Is(err, bgtask.ErrTerminated))
				if tc.wantCtxErr != nil {
					assert.ErrorIs(t, err, tc.wantCtxErr)
					assert.ErrorIs(t, se.Err, tc.wantCtxErr)
				} else {
					assert.NoError(t, se.Err)
				}
			})
		})
	}
}

func TestShutdownErrorZeroValuesPrint(t *testing.T) {
	assert.NotPanics(t, func() { _ = (&bgtask.ShutdownError{}).Error() })
	assert.NotPanics(t, func() { _ = (&bgtask.TerminatedError{}).Error() })
	assert.NotErrorIs(t, &bgtask.ShutdownError{}, bgtask.ErrTerminated)
	assert.NotErrorIs(t, &bgtask.ShutdownError{Instances: []bgtask.InstanceInfo{{}}}, bgtask.ErrTerminated)
	assert.NotPanics(t, func() { _ = (&bgtask.ShutdownError{Instances: []bgtask.InstanceInfo{{}}}).Error() })
}

func TestShutdownNamesStuckCallbacks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stuck string
		// setup registers "name" on h so that one of its callbacks blocks until release is
		// closed, and starts it.
		setup func(t *testing.T, h *bgtask.Host, release <-chan struct{})
	}{
		{
			name:  "OnCompleted handler",
			stuck: `OnCompleted handler of "name"`,
			setup: func(t *testing.T, h *bgtask.Host, release <-chan struct{}) {
				trig := bgtask.NewApplicationTrigger()
				r := mustRegister(t, h, bgtask.Builder{Name: "name", Task: returnsAtOnce, Trigger: trig})
				r.OnCompleted(func(bgtask.CompletedEventArgs) { <-release })
				mustRequest(t, trig)
			},
		},
		{
			name:  "OnCanceled handler",
			stuck: `OnCanceled handler of "name"`,
			setup: func(t *testing.T, h *bgtask.Host, release <-chan struct{}) {
				trig := bgtask.NewApplicationTrigger()
				mustRegister(t, h, bgtask.Builder{Name: "name", Trigger: trig,
					Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
						inst.OnCanceled(func(bgtask.BackgroundTaskInstance, bgtask.CancellationReason) { <-release })
						<-ctx.Done()
						return nil
					})})
				mustRequest(t, trig)
			},
		},
		{
			name:  "CustomTrigger.Watch ignoring its ctx",
			stuck: `CustomTrigger.Watch of "name"`,
			setup: func(t *testing.T, h *bgtask.Host, release <-chan struct{}) {
				mustRegister(t, h, bgtask.Builder{Name: "name", Task: returnsAtOnce,
					Trigger: &bgtask.CustomTrigger{Watch: func(context.Context, func(any) bgtask.ApplicationTriggerResult) error {
						<-release
						return nil
					}}})
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHost(t)
				release := make(chan struct{})
				tc.setup(t, h, release)
				synctest.Wait()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				err := h.Shutdown(ctx)
				var se *bgtask.ShutdownError
				require.ErrorAs(t, err, &se)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Contains(t, se.Stuck, tc.stuck)
				assert.Contains(t, err.Error(), tc.stuck)
				close(release)
				assert.NoError(t, h.Shutdown(context.Background()), "once the callback returned")
			})
		})
	}
}

func TestShutdownFromACallbackReturns(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stuck string
		// setup registers "name" on h so that one of its callbacks calls shutdown, and
		// starts it.
		setup func(t *testing.T, h *bgtask.Host, shutdown func())
	}{
		{
			name:  "OnCanceled handler",
			stuck: `OnCanceled handler of "name"`,
			setup: func(t *testing.T, h *bgtask.Host, shutdown func()) {
				trig := bgtask.NewApplicationTrigger()
				mustRegister(t, h, bgtask.Builder{Name: "name", Trigger: trig,
					Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
						inst.OnCanceled(func(bgtask.BackgroundTaskInstance, bgtask.CancellationReason) { shutdown() })
						<-ctx.Done()
						return nil
					})})
				mustRequest(t, trig)
				synctest.Wait()
				h.Cancel(bgtask.Abort)
			},
		},
		{
			name:  "OnCompleted handler",
			stuck: `OnCompleted handler of "name"`,
			setup: func(t *testing.T, h *bgtask.Host, shutdown func()) {
				trig := bgtask.NewApplicationTrigger()
				r := mustRegister(t, h, bgtask.Builder{Name: "name", Task: returnsAtOnce, Trigger: trig})
				r.OnCompleted(func(bgtask.CompletedEventArgs) { shutdown() })
				mustRequest(t, trig)
			},
		},
		{
			name:  "CustomTrigger.Watch",
			stuck: `CustomTrigger.Watch of "name"`,
			setup: func(t *testing.T, h *bgtask.Host, shutdown func()) {
				mustRegister(t, h, bgtask.Builder{Name: "name", Task: returnsAtOnce,
					Trigger: &bgtask.CustomTrigger{Watch: func(context.Context, func(any) bgtask.ApplicationTriggerResult) error {
						shutdown()
						return nil
					}}})
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHost(t)
				errs := make(chan error, 1)
				tc.setup(t, h, func() { errs <- h.Shutdown(context.Background()) })
				err := <-errs // a Shutdown waiting for its own caller would deadlock the bubble
				var se *bgtask.ShutdownError
				require.ErrorAs(t, err, &se)
				assert.NoError(t, se.Err)
				assert.Contains(t, se.Stuck, tc.stuck)
				assert.NoError(t, h.Shutdown(context.Background()), "once the callback returned")
			})
		})
	}
}

// Point 19: Arg.

func TestArg(t *testing.T) {
	insts := make(chan bgtask.BackgroundTaskInstance, 1)
	f := newFixture(t, started(insts, nil))
	mustRegister(t, f.host, bgtask.Builder{Name: "sys", Task: started(insts, nil),
		Trigger: &bgtask.SystemTrigger{Type: bgtask.SystemTriggerUserAway}})
	f.request(t, map[string]any{"n": 42})
	app := <-insts
	f.host.Signal(bgtask.SystemTriggerUserAway)
	sys := <-insts

	for _, tc := range []struct {
		name    string
		arg     func() (any, error)
		want    any
		wantErr []string // what the error names; nil: no error
	}{
		{"the right type", func() (any, error) { return bgtask.Arg[int](app, "n") }, 42, nil},
		{"a missing key", func() (any, error) { return bgtask.Arg[int](app, "m") }, 0, []string{`"m"`}},
		{"another type", func() (any, error) { return bgtask.Arg[string](app, "n") }, "", []string{`"n"`, "int", "string"}},
		{"not an ApplicationTrigger", func() (any, error) { return bgtask.Arg[int](sys, "n") }, 0, []string{"ApplicationTrigger"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := tc.arg()
			assert.Equal(t, tc.want, v)
			if tc.wantErr == nil {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
			for _, s := range tc.wantErr {
				assert.ErrorContains(t, err, s)
			}
		})
	}
	f.shutdown(t)
}

// Point 20: deferrals.

func TestNilDeferralCompleteDoesNothing(t *testing.T) {
	var d *bgtask.Deferral
	assert.NotPanics(t, d.Complete)
}

func TestCopiedDeferralReleasesOnlyItsOriginal(t *testing.T) {
	for _, copyFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("copy completed first %v", copyFirst), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				defs := make(chan [3]*bgtask.Deferral, 1)
				f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
					d := inst.GetDeferral()
					defs <- [3]*bgtask.Deferral{d, copyDeferral(d), inst.GetDeferral()}
					return nil
				})
				f.request(t, nil)
				d := <-defs
				if copyFirst {
					d[1].Complete()
					d[0].Complete()
				} else {
					d[0].Complete()
					d[1].Complete()
				}
				synctest.Wait()
				assert.False(t, f.pending(), "finished with a deferral open")
				d[2].Complete()
				require.NoError(t, (<-f.done).Err)
				f.shutdown(t)
			})
		})
	}
}

func TestGoRacingTheEndNeverRunsAfterIt(t *testing.T) {
	const callers, calls = 4, 5000 // 20,000 Go calls; fewer goroutines than the race detector's limit
	insts := make(chan bgtask.BackgroundTaskInstance, 1)
	defs := make(chan *bgtask.Deferral, 1)
	f := newFixture(t, started(insts, func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
		defs <- inst.GetDeferral()
		return nil
	}), bgtask.WithLogger(nil)) // Go after the end logs
	var ended atomic.Bool
	var began, returned, late, beganAtEnd atomic.Int64
	f.reg.OnCompleted(func(bgtask.CompletedEventArgs) {
		ended.Store(true)
		beganAtEnd.Store(began.Load())
	})
	f.request(t, nil)
	inst, d := <-insts, <-defs
	fn := func(context.Context) error {
		began.Add(1)
		if ended.Load() {
			late.Add(1)
		}
		returned.Add(1)
		return nil
	}
	var wg sync.WaitGroup
	for w := range callers {
		wg.Go(func() {
			for k := range calls {
				if w == 0 && k == calls/4 {
					d.Complete() // the instance ends when no Go func holds it
				}
				inst.Go(fn)
				runtime.Gosched()
			}
		})
	}
	wg.Wait()
	require.NoError(t, (<-f.done).Err)
	f.shutdown(t)
	assert.Empty(t, f.done, "one Completed event")
	assert.Zero(t, late.Load(), "Go funcs ran after Completed")
	assert.Equal(t, beganAtEnd.Load(), began.Load(), "Go funcs started after Completed")
	assert.Equal(t, began.Load(), returned.Load(), "Shutdown returned before every Go func did")
	assert.Positive(t, began.Load())
}

// runtime.Goexit in the program's code.

func TestGoexitStillFinishesTheInstance(t *testing.T) {
	for _, tc := range []struct {
		name string
		task bgtask.TaskFunc
	}{
		{"in Run", func(context.Context, bgtask.BackgroundTaskInstance) error {
			runtime.Goexit()
			return nil
		}},
		{"in a Go func", func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.Go(func(context.Context) error {
				runtime.Goexit()
				return nil
			})
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, tc.task)
				f.request(t, nil)
				assert.ErrorContains(t, (<-f.done).Err, "Goexit")
				synctest.Wait()
				assert.False(t, f.pending(), "one Completed event")
				f.shutdown(t)
			})
		})
	}
}

func TestGoexitInOnCompletedHandlerSparesLaterEvents(t *testing.T) {
	for _, terminated := range []bool{false, true} {
		t.Run(fmt.Sprintf("terminated %v", terminated), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				f := newFixture(t, func(context.Context, bgtask.BackgroundTaskInstance) error {
					if terminated {
						<-release
					}
					return nil
				}, bgtask.WithPolicy(bgtask.Policy{GracePeriod: time.Second}))
				f.reg.OnCompleted(func(bgtask.CompletedEventArgs) { runtime.Goexit() })
				for range 3 {
					f.request(t, nil)
					if terminated {
						f.host.Cancel(bgtask.Abort)
					}
					<-f.done
				}
				close(release)
				synctest.Wait()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				assert.NoError(t, f.host.Shutdown(ctx), "the handlers' goroutines have all ended")
				assert.Contains(t, f.log.String(), "Goexit")
			})
		})
	}
}

// Bad input.

func TestRequestWithNilContext(t *testing.T) {
	f := newFixture(t, returnsAtOnce)
	var nilCtx context.Context
	res, err := f.trig.Request(nilCtx, nil)
	assert.Equal(t, bgtask.UnknownError, res)
	assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	e, res, err := f.trig.RequestAndWait(nilCtx, nil)
	assert.Equal(t, bgtask.UnknownError, res)
	assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	assert.Zero(t, e)
	f.shutdown(t)
}

func TestTypedNilsAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  func(t *testing.T) error
		want error
	}{
		{"nil *Switch condition", func(t *testing.T) error {
			h := newHost(t)
			defer func() { require.NoError(t, h.Shutdown(context.Background())) }()
			_, err := h.Register(bgtask.Builder{Name: "x", Task: returnsAtOnce, Trigger: bgtask.NewApplicationTrigger(),
				Conditions: []bgtask.Condition{(*bgtask.Switch)(nil)}})
			return err
		}, bgtask.ErrInvalidArgument},
		{"nil TaskFunc entry point", func(*testing.T) error {
			_, err := bgtask.NewHost(bgtask.WithEntryPoint("x", bgtask.TaskFunc(nil)))
			return err
		}, bgtask.ErrInvalidArgument},
		{"nil TaskFunc task", func(t *testing.T) error {
			h := newHost(t)
			defer func() { require.NoError(t, h.Shutdown(context.Background())) }()
			_, err := h.Register(bgtask.Builder{Name: "x", Task: bgtask.TaskFunc(nil), Trigger: bgtask.NewApplicationTrigger()})
			return err
		}, bgtask.ErrNoTask},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.ErrorIs(t, tc.err(t), tc.want)
		})
	}
}

// Time triggers at the limits.

func TestTimeTriggerWithTheLongestPeriodNeverFires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		time.Sleep(time.Second) // so that Register's now plus the period overflows
		var runs atomic.Int32
		mustRegister(t, h, bgtask.Builder{Name: "never", Trigger: &bgtask.TimeTrigger{FreshnessTime: math.MaxInt64},
			Task: bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
				runs.Add(1)
				inst.Task().Unregister(false) // no storm of fires if it does run
				return nil
			})})
		time.Sleep(100 * 365 * 24 * time.Hour)
		synctest.Wait()
		assert.Zero(t, runs.Load())
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestTimeTriggerOfOneNanosecondRunsBackToBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithPolicy(bgtask.Policy{MinFreshness: time.Nanosecond}))
		var runs, running, overlaps atomic.Int32
		mustRegister(t, h, bgtask.Builder{Name: "busy", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Nanosecond},
			Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error {
				if running.Add(1) > 1 {
					overlaps.Add(1)
				}
				runs.Add(1)
				time.Sleep(10 * time.Microsecond)
				running.Add(-1)
				return nil
			})})
		time.Sleep(time.Millisecond)
		require.NoError(t, h.Shutdown(context.Background()))
		// The first run starts at 1ns and each catch-up as soon as the last ends: at 1ns+k·10µs.
		assert.Equal(t, int32(100), runs.Load())
		assert.Zero(t, overlaps.Load())
	})
}

// 21a: a CustomTrigger's fields are read once, by Register.

func TestCustomTriggerWatchIsReadAtRegister(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		watched := make(chan string, 2)
		watch := func(name string) func(context.Context, func(any) bgtask.ApplicationTriggerResult) error {
			return func(ctx context.Context, _ func(any) bgtask.ApplicationTriggerResult) error {
				watched <- name
				<-ctx.Done()
				return nil
			}
		}
		trig := &bgtask.CustomTrigger{Watch: watch("registered")}
		mustRegister(t, h, bgtask.Builder{Name: "custom", Task: returnsAtOnce, Trigger: trig})
		trig.Watch = watch("assigned later")
		synctest.Wait()
		require.NoError(t, h.Shutdown(context.Background()))
		close(watched)
		var got []string
		for w := range watched {
			got = append(got, w)
		}
		assert.Equal(t, []string{"registered"}, got)
	})
}

func TestSharedApplicationTriggerAfterOneHostShutsDown(t *testing.T) {
	for _, tc := range []struct {
		name    string
		onHost2 bool
		want    bgtask.ApplicationTriggerResult
	}{
		{"registered only on the host shut down", false, bgtask.DisabledByPolicy},
		{"registered on a live host too", true, bgtask.Allowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trig := bgtask.NewApplicationTrigger()
			h1, h2 := newHost(t), newHost(t)
			mustRegister(t, h1, bgtask.Builder{Name: "one", Task: returnsAtOnce, Trigger: trig})
			if tc.onHost2 {
				mustRegister(t, h2, bgtask.Builder{Name: "two", Task: returnsAtOnce, Trigger: trig})
			}
			require.NoError(t, h1.Shutdown(context.Background()))
			res, err := trig.Request(context.Background(), nil)
			require.NoError(t, err)
			assert.Equal(t, tc.want, res)
			require.NoError(t, h2.Shutdown(context.Background()))
		})
	}
}

func TestIdleTimeExcludesTheSuspension(t *testing.T) {
	// IdleTimeout is 100s and the host is suspended from 10s to 150s. Idle time excludes the
	// suspension, and activity during it counts as at its end.
	for _, tc := range []struct {
		name     string
		activity time.Duration // when the task calls SetProgress; 0: never
		want     time.Duration // when the instance is canceled with IdleTask
	}{
		{"no activity", 0, 240 * time.Second},                                   // idle 10s before, 90s after
		{"activity before the suspension", 5 * time.Second, 245 * time.Second},  // idle 5s before, 95s after
		{"activity during the suspension", 50 * time.Second, 250 * time.Second}, // as at 150s
		{"activity after the suspension", 160 * time.Second, 260 * time.Second}, // idle from 160s
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
					if tc.activity > 0 {
						time.Sleep(tc.activity)
						inst.SetProgress(1)
					}
					<-ctx.Done()
					return nil
				}, bgtask.WithPolicy(bgtask.Policy{IdleTimeout: 100 * time.Second}))
				start := time.Now()
				f.request(t, nil)
				time.Sleep(10 * time.Second)
				f.host.Suspend()
				time.Sleep(140 * time.Second)
				f.host.Resume()
				e := <-f.done
				assert.Equal(t, bgtask.IdleTask, e.Reason)
				assert.Equal(t, tc.want, time.Since(start))
				f.shutdown(t)
			})
		})
	}
}

// panicOnStop is a condition that always holds and whose stop func panics.
type panicOnStop struct{}

func (panicOnStop) Satisfied(*bgtask.Host) bool { return true }

func (panicOnStop) Watch(*bgtask.Host, func()) func() { return func() { panic("stop exploded") } }

func TestPanicInConditionStopIsLogged(t *testing.T) {
	for _, unregister := range []bool{false, true} {
		t.Run(fmt.Sprintf("unregister %v", unregister), func(t *testing.T) {
			log := new(syncBuffer)
			h := newHost(t, bgtask.WithLogger(slogTo(log)))
			r := mustRegister(t, h, bgtask.Builder{Name: "cond", Task: returnsAtOnce,
				Trigger: bgtask.NewApplicationTrigger(), Conditions: []bgtask.Condition{panicOnStop{}}})
			if unregister {
				r.Unregister(false)
			}
			require.NoError(t, h.Shutdown(context.Background())) // waits for the stop func
			assert.Contains(t, log.String(), "panic")
			assert.Contains(t, log.String(), "stop exploded")
		})
	}
}

// RequestAndWait.

func TestRequestAndWaitReturnsTheTaskOutcome(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		insts := make(chan bgtask.BackgroundTaskInstance, 1)
		f := newFixture(t, started(insts, func(context.Context, bgtask.BackgroundTaskInstance) error {
			time.Sleep(time.Second)
			return boom
		}))
		e, res, err := f.trig.RequestAndWait(context.Background(), nil)
		require.NoError(t, err)
		assert.Equal(t, bgtask.Allowed, res)
		assert.ErrorIs(t, e.Err, boom)
		assert.Equal(t, (<-insts).InstanceID(), e.InstanceID)
		assert.Equal(t, time.Second, e.Finished.Sub(e.Started))
		f.shutdown(t)
	})
}

func TestRequestAndWaitOnAHeldFire(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		release func(online *bgtask.Switch, r *bgtask.Registration)
		runs    int32
		check   func(t *testing.T, e bgtask.CompletedEventArgs)
	}{
		{
			name:    "started once the condition holds",
			release: func(online *bgtask.Switch, _ *bgtask.Registration) { online.Set(true) },
			runs:    1,
			check: func(t *testing.T, e bgtask.CompletedEventArgs) {
				assert.ErrorIs(t, e.Err, boom)
				assert.False(t, e.Canceled)
				assert.False(t, e.Started.IsZero())
			},
		},
		{
			name:    "dropped by Unregister",
			release: func(_ *bgtask.Switch, r *bgtask.Registration) { r.Unregister(false) },
			runs:    0,
			check: func(t *testing.T, e bgtask.CompletedEventArgs) {
				assert.ErrorIs(t, e.Err, bgtask.ErrCanceled)
				assert.True(t, e.Canceled)
				assert.Equal(t, bgtask.Abort, e.Reason)
				assert.True(t, e.Started.IsZero())
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHost(t)
				online := bgtask.NewCondition(false)
				trig := bgtask.NewApplicationTrigger()
				var runs atomic.Int32
				r := mustRegister(t, h, bgtask.Builder{Name: "held", Trigger: trig, Conditions: []bgtask.Condition{online},
					Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error {
						runs.Add(1)
						return boom
					})})
				type outcome struct {
					e   bgtask.CompletedEventArgs
					res bgtask.ApplicationTriggerResult
					err error
				}
				outcomes := make(chan outcome, 2)
				for range 2 { // the second caller coalesces with the first
					go func() {
						e, res, err := trig.RequestAndWait(context.Background(), nil)
						outcomes <- outcome{e, res, err}
					}()
				}
				synctest.Wait()
				require.Empty(t, outcomes, "returned while the fire was held")
				tc.release(online, r)
				a, b := <-outcomes, <-outcomes
				for _, o := range []outcome{a, b} {
					require.NoError(t, o.err)
					assert.Equal(t, bgtask.Allowed, o.res)
					tc.check(t, o.e)
				}
				assert.Equal(t, a.e, b.e, "coalesced callers get the same outcome")
				require.NoError(t, h.Shutdown(context.Background()))
				assert.Equal(t, tc.runs, runs.Load())
			})
		})
	}
}

func TestRequestAndWaitReturnsAtOnceWhenRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, waitsForCancel)
		f.request(t, nil)
		e, res, err := f.trig.RequestAndWait(context.Background(), nil)
		assert.NoError(t, err)
		assert.Equal(t, bgtask.CurrentlyRunning, res)
		assert.Zero(t, e)
		f.shutdown(t)
	})
}

func TestRequestAndWaitStopsWaitingWhenCtxEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, waitsForCancel)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		e, res, err := f.trig.RequestAndWait(ctx, nil)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, bgtask.Allowed, res, "the fire was accepted and still runs")
		assert.Zero(t, e)
		assert.Equal(t, time.Second, time.Since(start))
		f.shutdown(t)
	})
}

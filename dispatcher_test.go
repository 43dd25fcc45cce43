package bgtask_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
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

// queue is a Dispatcher that keeps the fires it takes, as a fleet's queue would, and
// answers CurrentlyRunning to a fire of a registration already queued.
type queue struct {
	mu     sync.Mutex
	fires  []queued
	answer bgtask.CompletedEventArgs // returned when asked to wait
	err    error
}

type queued struct {
	r       *bgtask.Registration
	details any
}

func (q *queue) Dispatch(_ context.Context, r *bgtask.Registration, details any, wait bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return bgtask.CompletedEventArgs{}, bgtask.UnknownError, q.err
	}
	if _, ok := details.(*bgtask.ApplicationTriggerDetails); ok {
		for _, f := range q.fires {
			if f.r.TaskID() == r.TaskID() {
				return bgtask.CompletedEventArgs{}, bgtask.CurrentlyRunning, nil
			}
		}
	}
	q.fires = append(q.fires, queued{r, details})
	if wait {
		return q.answer, bgtask.Allowed, nil
	}
	return bgtask.CompletedEventArgs{}, bgtask.Allowed, nil
}

func (q *queue) taken() []queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queued(nil), q.fires...)
}

// dispatchingHost is a host with a store and a dispatcher, and the entry point "job" bound to
// task.
func dispatchingHost(t *testing.T, s bgtask.Store, d bgtask.Dispatcher, task bgtask.TaskFunc, opts ...bgtask.Option) *bgtask.Host {
	t.Helper()
	return newHost(t, append([]bgtask.Option{bgtask.WithLogger(nil), bgtask.WithStore(s), bgtask.WithDispatcher(d),
		bgtask.WithEntryPoint("job", task)}, opts...)...)
}

func TestHostDispatcher(t *testing.T) {
	q := &queue{}
	h := dispatchingHost(t, newMemStore(), q, nopTask)
	assert.Same(t, q, h.Dispatcher())
	assert.Nil(t, newHost(t).Dispatcher(), "none")
}

func TestDispatcherTakesRequests(t *testing.T) {
	ran := make(chan struct{}, 1)
	q := &queue{}
	h := dispatchingHost(t, newMemStore(), q, func(context.Context, bgtask.BackgroundTaskInstance) error { ran <- struct{}{}; return nil })
	trig := bgtask.NewApplicationTrigger()
	reg, err := h.Register(bgtask.Builder{Name: "x", TaskEntryPoint: "job", Trigger: trig})
	require.NoError(t, err)

	res, err := trig.Request(t.Context(), map[string]any{"k": "v"})
	require.NoError(t, err)
	assert.Equal(t, bgtask.Allowed, res)
	res, err = trig.Request(t.Context(), nil)
	require.NoError(t, err)
	assert.Equal(t, bgtask.CurrentlyRunning, res, "the dispatcher's answer")
	fires := q.taken()
	require.Len(t, fires, 1)
	assert.Equal(t, reg, fires[0].r)
	assert.Equal(t, map[string]any{"k": "v"}, fires[0].details.(*bgtask.ApplicationTriggerDetails).Arguments)
	assert.Empty(t, h.Instances(), "nothing runs here until RunInstance")

	q.answer = bgtask.CompletedEventArgs{Progress: 7}
	q.fires = nil
	out, res, err := trig.RequestAndWait(t.Context(), nil)
	require.NoError(t, err)
	assert.Equal(t, bgtask.Allowed, res)
	assert.Equal(t, uint32(7), out.Progress, "RequestAndWait returns what the dispatcher waited for")

	q.err = errors.New("queue down")
	res, err = trig.Request(t.Context(), nil)
	assert.ErrorIs(t, err, q.err)
	assert.Equal(t, bgtask.UnknownError, res)

	require.NoError(t, h.Shutdown(t.Context()))
	res, err = trig.Request(t.Context(), nil)
	require.NoError(t, err)
	assert.Equal(t, bgtask.DisabledByPolicy, res, "a host shut down takes no fire")
	assert.Empty(t, ran)
}

// Registrations with only a Task, and other triggers, still run here.
func TestDispatcherLeavesOtherRegistrationsAlone(t *testing.T) {
	q := &queue{}
	h := dispatchingHost(t, newMemStore(), q, func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	trig := bgtask.NewApplicationTrigger()
	_, err := h.Register(bgtask.Builder{Name: "local", Task: nopTask, Trigger: trig})
	require.NoError(t, err)
	_, err = h.Register(bgtask.Builder{Name: "system", TaskEntryPoint: "job", Trigger: &bgtask.SystemTrigger{Type: bgtask.SystemTriggerUserPresent}})
	require.NoError(t, err)
	out, res, err := trig.RequestAndWait(t.Context(), nil)
	require.NoError(t, err)
	assert.Equal(t, bgtask.Allowed, res)
	assert.NoError(t, out.Err)
	assert.False(t, out.Started.IsZero(), "it ran here")
	require.NoError(t, h.Shutdown(t.Context()))
	assert.Empty(t, q.taken())
}

func TestRunInstanceRunsUnderTheHostsRules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := dispatchingHost(t, newMemStore(), &queue{}, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.SetProgress(40)
			<-ctx.Done()
			return context.Cause(ctx)
		}, bgtask.WithPolicy(bgtask.Policy{MaxExecutionTime: time.Minute}))
		var rec eventLog
		h.Subscribe(rec.add, bgtask.EventLaunched, bgtask.EventCompleted)
		reg, err := h.Register(bgtask.Builder{Name: "x", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
		require.NoError(t, err)
		completed := make(chan bgtask.CompletedEventArgs, 1)
		reg.OnCompleted(func(e bgtask.CompletedEventArgs) { completed <- e })

		id := uuid.New()
		details := &bgtask.ApplicationTriggerDetails{Arguments: map[string]any{"a": 1}}
		start := time.Now()
		out, err := h.RunInstance(t.Context(), reg, id, details)
		require.NoError(t, err)
		assert.Equal(t, id, out.InstanceID)
		assert.Equal(t, bgtask.ExecutionTimeExceeded, out.Reason, "the policy's time limit")
		assert.Equal(t, time.Minute, time.Since(start))
		assert.Equal(t, uint32(40), out.Progress)
		assert.Equal(t, out, <-completed, "the Completed handlers run as for any instance")
		last, ok := reg.LastResult()
		assert.True(t, ok)
		assert.Equal(t, id, last.InstanceID)
		require.NoError(t, h.Shutdown(t.Context()))
		assert.Equal(t, []bgtask.EventKind{bgtask.EventLaunched, bgtask.EventCompleted}, rec.kinds(id))
	})
}

func TestRunInstanceTakesTheReasonFromTheContext(t *testing.T) {
	for _, tc := range []struct {
		cause error
		want  bgtask.CancellationReason
	}{
		{&bgtask.CanceledError{Reason: bgtask.Terminating}, bgtask.Terminating},
		{errors.New("elsewhere"), bgtask.Abort},
		{nil, bgtask.Abort},
	} {
		synctest.Test(t, func(t *testing.T) {
			details := make(chan any, 1)
			h := dispatchingHost(t, newMemStore(), &queue{}, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
				details <- inst.TriggerDetails()
				<-ctx.Done()
				return nil
			})
			reg, err := h.Register(bgtask.Builder{Name: "x", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
			require.NoError(t, err)
			ctx, cancel := context.WithCancelCause(t.Context())
			go func() {
				<-details
				cancel(tc.cause)
			}()
			want := &bgtask.TimeTriggerDetails{ScheduledAt: time.Now()}
			out, err := h.RunInstance(ctx, reg, uuid.New(), want)
			require.NoError(t, err)
			assert.True(t, out.Canceled)
			assert.Equal(t, tc.want, out.Reason)
			require.NoError(t, h.Shutdown(t.Context()))
		})
	}
}

func TestRunInstanceRefusesWhatWouldBeHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		cond := bgtask.SystemCondition{Type: bgtask.SystemConditionInternetAvailable}
		h := dispatchingHost(t, newMemStore(), &queue{}, func(context.Context, bgtask.BackgroundTaskInstance) error { <-release; return nil },
			bgtask.WithPolicy(bgtask.Policy{MaxConcurrent: 1}))
		h.SetCondition(cond.Type, true)
		reg, err := h.Register(bgtask.Builder{Name: "x", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger(), Conditions: []bgtask.Condition{cond}})
		require.NoError(t, err)
		other, err := h.Register(bgtask.Builder{Name: "y", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
		require.NoError(t, err)
		held := func(r *bgtask.Registration) bgtask.HeldBy {
			_, err := h.RunInstance(t.Context(), r, uuid.New(), nil)
			var he *bgtask.HeldError
			if !errors.As(err, &he) {
				t.Fatalf("not held: %v", err)
			}
			assert.ErrorIs(t, err, bgtask.ErrHeld)
			return he.By
		}
		go func() { _, _ = h.RunInstance(t.Context(), reg, uuid.New(), nil) }()
		synctest.Wait()
		assert.Equal(t, bgtask.HeldByRunning, held(reg))
		assert.Equal(t, bgtask.HeldByConcurrency, held(other))
		close(release)
		synctest.Wait()
		h.SetCondition(cond.Type, false)
		assert.Equal(t, bgtask.HeldByConditions, held(reg))
		h.Suspend()
		assert.Equal(t, bgtask.HeldBySuspension, held(other))
		assert.Equal(t, "bgtask: held: suspended", (&bgtask.HeldError{By: bgtask.HeldBySuspension}).Error())
		h.Resume()
		require.NoError(t, h.Shutdown(t.Context()))
		_, err = h.RunInstance(t.Context(), other, uuid.New(), nil)
		assert.ErrorIs(t, err, bgtask.ErrHostClosed)
	})
}

func TestRunInstanceRefusesBadInput(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	other := newHost(t, bgtask.WithLogger(nil))
	reg, err := h.Register(bgtask.Builder{Name: "x", Task: nopTask, Trigger: bgtask.NewApplicationTrigger()})
	require.NoError(t, err)
	foreign, err := other.Register(bgtask.Builder{Name: "x", Task: nopTask, Trigger: bgtask.NewApplicationTrigger()})
	require.NoError(t, err)
	//lint:ignore SA1012 a nil ctx is what is tested
	_, err = h.RunInstance(nil, reg, uuid.New(), nil) //nolint:staticcheck
	assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	_, err = h.RunInstance(t.Context(), nil, uuid.New(), nil)
	assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	_, err = h.RunInstance(t.Context(), foreign, uuid.New(), nil)
	assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	_, err = h.RunInstance(t.Context(), reg, uuid.Nil, nil)
	assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	reg.Unregister(false)
	_, err = h.RunInstance(t.Context(), reg, uuid.New(), nil)
	assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	out, err := other.RunInstance(t.Context(), foreign, uuid.New(), "details")
	require.NoError(t, err, "without a dispatcher too")
	assert.NoError(t, out.Err)
	require.NoError(t, h.Shutdown(t.Context()))
	require.NoError(t, other.Shutdown(t.Context()))
	_, err = bgtask.NewHost(bgtask.WithDispatcher(nil))
	assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
}

// Two processes over one store Ensure the same Builder: one registration, one TaskID, and
// a time trigger's times on the same grid, from the Unix epoch, in both.
func TestDispatchedTimeTriggerIsOneRegistrationInEveryProcess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		time.Sleep(17 * time.Second) // off the minute: the grid must not start at Register
		s := newMemStore()
		qa, qb := &queue{}, &queue{}
		a := dispatchingHost(t, s, qa, nopTask)
		b := dispatchingHost(t, s, qb, nopTask)
		builder := bgtask.Builder{Name: "nightly", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}}
		ra, err := a.Ensure(builder)
		require.NoError(t, err)
		time.Sleep(5 * time.Second)
		rb, err := b.Ensure(builder)
		require.NoError(t, err)
		assert.Equal(t, ra.TaskID(), rb.TaskID())
		again, err := a.Ensure(builder)
		require.NoError(t, err)
		assert.Same(t, ra, again)
		_, err = a.Register(builder)
		assert.ErrorIs(t, err, bgtask.ErrInvalidArgument, "Register of a name taken")

		time.Sleep(3 * time.Minute)
		synctest.Wait()
		times := func(q *queue) []time.Time {
			var ts []time.Time
			for _, f := range q.taken() {
				ts = append(ts, f.details.(*bgtask.TimeTriggerDetails).ScheduledAt.UTC())
			}
			return ts
		}
		epoch := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // the bubble's clock starts there
		want := []time.Time{epoch.Add(time.Minute), epoch.Add(2 * time.Minute), epoch.Add(3 * time.Minute)}
		assert.Equal(t, want, times(qa))
		assert.Equal(t, want, times(qb), "the same times: the queue keeps one of each")
		assert.Empty(t, a.Instances())
		require.NoError(t, a.Shutdown(t.Context()))
		require.NoError(t, b.Shutdown(t.Context()))

		// Down for 10 minutes: one catch-up fire, for the latest time missed.
		time.Sleep(10 * time.Minute)
		qc := &queue{}
		c := dispatchingHost(t, s, qc, nopTask)
		synctest.Wait()
		assert.Equal(t, []time.Time{epoch.Add(13 * time.Minute)}, times(qc))
		require.NoError(t, c.Shutdown(t.Context()))
	})
}

// funcDispatcher is a Dispatcher made of a func.
type funcDispatcher func(ctx context.Context, r *bgtask.Registration, details any, wait bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error)

func (f funcDispatcher) Dispatch(ctx context.Context, r *bgtask.Registration, details any, wait bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
	return f(ctx, r, details, wait)
}

func TestDispatcherPanicIsRecovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := new(syncBuffer)
		calls := 0
		d := funcDispatcher(func(context.Context, *bgtask.Registration, any, bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
			calls++
			panic("dispatcher bug")
		})
		h := dispatchingHost(t, newMemStore(), d, nopTask, bgtask.WithLogger(slogTo(log)))
		_, err := h.Register(bgtask.Builder{Name: "tick", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
		require.NoError(t, err)
		trig := bgtask.NewApplicationTrigger()
		_, err = h.Register(bgtask.Builder{Name: "req", TaskEntryPoint: "job", Trigger: trig})
		require.NoError(t, err)
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		assert.Equal(t, 2, calls, "the scheduler goes on after a panic")
		res, err := trig.Request(t.Context(), nil)
		var pe *bgtask.PanicError
		assert.ErrorAs(t, err, &pe, "Request returns the panic")
		assert.Equal(t, bgtask.UnknownError, res)
		require.NoError(t, h.Shutdown(t.Context()))
		assert.Contains(t, log.String(), "panic in Dispatcher.Dispatch recovered")
	})
}

// Shutdown called from the Dispatch of a time fire, on a goroutine of the host's, does not
// wait for itself; a Dispatch that blocks is named in Stuck.
func TestDispatchOnTheSchedulerIsACallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var h *bgtask.Host
		got := make(chan error, 1)
		d := funcDispatcher(func(context.Context, *bgtask.Registration, any, bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
			got <- h.Shutdown(context.Background())
			return bgtask.CompletedEventArgs{}, bgtask.Allowed, nil
		})
		h = dispatchingHost(t, newMemStore(), d, nopTask)
		_, err := h.Register(bgtask.Builder{Name: "tick", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
		require.NoError(t, err)
		var se *bgtask.ShutdownError
		require.ErrorAs(t, <-got, &se)
		assert.Contains(t, se.Stuck, "Dispatcher.Dispatch")
		require.NoError(t, h.Shutdown(t.Context()))
	})
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		d := funcDispatcher(func(context.Context, *bgtask.Registration, any, bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
			<-release
			return bgtask.CompletedEventArgs{}, bgtask.Allowed, nil
		})
		h := dispatchingHost(t, newMemStore(), d, nopTask)
		_, err := h.Register(bgtask.Builder{Name: "tick", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
		require.NoError(t, err)
		time.Sleep(time.Minute)
		synctest.Wait()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		var se *bgtask.ShutdownError
		require.ErrorAs(t, h.Shutdown(ctx), &se)
		assert.Contains(t, se.Stuck, "Dispatcher.Dispatch")
		close(release)
		require.NoError(t, h.Shutdown(t.Context()))
	})
}

func TestOneShotFiresOnceThroughTheSeam(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var h *bgtask.Host
		runs := 0
		d := funcDispatcher(func(ctx context.Context, r *bgtask.Registration, details any, _ bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
			out, err := h.RunInstance(ctx, r, uuid.New(), details)
			return out, bgtask.Allowed, err
		})
		h = dispatchingHost(t, newMemStore(), d, func(context.Context, bgtask.BackgroundTaskInstance) error { runs++; return nil })
		trig := &bgtask.ApplicationTrigger{OneShot: true}
		_, err := h.Register(bgtask.Builder{Name: "once", TaskEntryPoint: "job", Trigger: trig})
		require.NoError(t, err)
		for range 3 {
			_, _ = trig.Request(t.Context(), nil)
		}
		assert.Equal(t, 1, runs)
		assert.Empty(t, h.AllTasks())
		require.NoError(t, h.Shutdown(t.Context()))
	})
}

func TestRunInstanceOfAOneShotUnregistersIt(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	trig := &bgtask.ApplicationTrigger{OneShot: true}
	r, err := h.Register(bgtask.Builder{Name: "once", Trigger: trig, Task: nopTask})
	require.NoError(t, err)
	_, err = h.RunInstance(t.Context(), r, uuid.New(), nil)
	require.NoError(t, err)
	res, err := trig.Request(t.Context(), nil)
	require.NoError(t, err)
	assert.Equal(t, bgtask.DisabledByPolicy, res)
	require.NoError(t, h.Shutdown(t.Context()))
}

func TestRunInstanceWithADoneContextStartsNothing(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	r, err := h.Register(bgtask.Builder{Name: "x", Trigger: bgtask.NewApplicationTrigger(), Task: nopTask})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = h.RunInstance(ctx, r, uuid.New(), nil)
	assert.ErrorIs(t, err, context.Canceled)
	_, ok := r.LastResult()
	assert.False(t, ok)
	require.NoError(t, h.Shutdown(t.Context()))
}

func TestDispatcherNeedsAStore(t *testing.T) {
	_, err := bgtask.NewHost(bgtask.WithLogger(nil), bgtask.WithDispatcher(&queue{}))
	assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
}

func TestDispatchedOneShotTimeTriggerIsHandedOverOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := &queue{}
		h := dispatchingHost(t, newMemStore(), q, nopTask)
		_, err := h.Register(bgtask.Builder{Name: "once", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute, OneShot: true}})
		require.NoError(t, err)
		time.Sleep(3 * time.Minute)
		synctest.Wait()
		require.Len(t, q.taken(), 1)
		r := q.taken()[0].r
		_, ok := r.NextFire()
		assert.False(t, ok, "it fires once")
		assert.Len(t, h.AllTasks(), 1, "registered until its instance starts, wherever that is")
		_, err = h.RunInstance(t.Context(), r, uuid.New(), q.taken()[0].details)
		require.NoError(t, err)
		assert.Empty(t, h.AllTasks(), "unregistered by its instance's start")
		require.NoError(t, h.Shutdown(t.Context()))
	})
}

// The time fires due at one instant are handed over at once, each on a goroutine of its own,
// for the dispatcher to take together; the next times wait until every Dispatch of the
// earlier ones has returned.
func TestTimeFiresDueTogetherAreDispatchedAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 3
		var mu sync.Mutex
		var at []time.Time
		all := make(chan struct{}) // closed once n Dispatches are in at once
		d := funcDispatcher(func(_ context.Context, _ *bgtask.Registration, details any, _ bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
			mu.Lock()
			at = append(at, details.(*bgtask.TimeTriggerDetails).ScheduledAt)
			if len(at) == n {
				close(all)
			}
			mu.Unlock()
			<-all
			time.Sleep(90 * time.Second) // one Dispatch for each: the next times wait
			return bgtask.CompletedEventArgs{}, bgtask.Allowed, nil
		})
		h := dispatchingHost(t, newMemStore(), d, nopTask)
		for k := range n {
			_, err := h.Register(bgtask.Builder{Name: fmt.Sprint("tick", k), TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
			require.NoError(t, err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		select {
		case <-all:
		default:
			t.Fatal("the time fires due at one instant were not handed over at once")
		}
		time.Sleep(75 * time.Second) // past the next time, while the first Dispatches last
		synctest.Wait()
		mu.Lock()
		assert.Len(t, at, n, "the next times wait for the Dispatches before them")
		mu.Unlock()
		time.Sleep(15 * time.Second) // the first Dispatches return
		synctest.Wait()
		mu.Lock()
		require.Len(t, at, 2*n)
		first, second := at[0], at[n]
		assert.Equal(t, slices.Repeat([]time.Time{first}, n), at[:n])
		assert.Equal(t, slices.Repeat([]time.Time{second}, n), at[n:], "one catch-up each, for the latest time")
		assert.Equal(t, time.Minute, second.Sub(first))
		mu.Unlock()
		require.NoError(t, h.Shutdown(t.Context()))
	})
}

// A dispatched registration whose instance runs here (RunInstance) keeps its schedule
// when Ensure changes it meanwhile: its later times still go to the dispatcher, never to an
// instance started here.
func TestEnsureWhileADispatchedInstanceRunsHereKeepsDispatching(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var h *bgtask.Host
		var dispatched, launched atomic.Int32
		d := funcDispatcher(func(_ context.Context, r *bgtask.Registration, details any, _ bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
			dispatched.Add(1)
			out, err := h.RunInstance(context.Background(), r, uuid.New(), details)
			if errors.Is(err, bgtask.ErrHeld) {
				return out, bgtask.CurrentlyRunning, nil
			}
			return out, bgtask.Allowed, err
		})
		h = dispatchingHost(t, newMemStore(), d, func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
			select {
			case <-time.After(150 * time.Second): // longer than the period
			case <-ctx.Done():
			}
			return nil
		})
		h.Subscribe(func(bgtask.Event) { launched.Add(1) }, bgtask.EventLaunched)
		b := bgtask.Builder{Name: "t", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}}
		_, err := h.Register(b)
		require.NoError(t, err)
		time.Sleep(time.Minute + time.Second) // the first instance runs
		b.MaxExecutionTime = time.Hour
		_, err = h.Ensure(b)
		require.NoError(t, err)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		// Each Dispatch runs its instance to the end, 150 s: the times that come meanwhile
		// are one catch-up, handed over when it returns (at 1, 3 and 6 minutes).
		assert.Equal(t, int32(3), dispatched.Load(), "the times handed over")
		assert.Equal(t, dispatched.Load(), launched.Load(), "the instances that the Dispatches ran, and no other")
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

// The time fires the scheduler took before Shutdown are handed over while Shutdown runs
// (here called by the Dispatch of one of them), not refused: their times are spent here,
// and after a restart none comes due again.
func TestTimeFiresTakenBeforeShutdownAreHandedOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 10
		s := newMemStore()
		var h *bgtask.Host
		var mu sync.Mutex
		got := map[string]int{}
		d := funcDispatcher(func(_ context.Context, r *bgtask.Registration, _ any, _ bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
			mu.Lock()
			got[r.Name()]++
			mu.Unlock()
			if r.Name() == "t0" {
				_ = h.Shutdown(context.Background()) // a callback: it does not wait for itself
			}
			return bgtask.CompletedEventArgs{}, bgtask.Allowed, nil
		})
		h = dispatchingHost(t, s, d, nopTask)
		for k := range n {
			_, err := h.Register(bgtask.Builder{Name: fmt.Sprint("t", k), TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
			require.NoError(t, err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		require.NoError(t, h.Shutdown(context.Background()))
		h2 := dispatchingHost(t, s, d, nopTask) // a restart at once, on the same store
		time.Sleep(30 * time.Second)
		synctest.Wait()
		require.NoError(t, h2.Shutdown(context.Background()))
		mu.Lock()
		defer mu.Unlock()
		for k := range n {
			assert.Equal(t, 1, got[fmt.Sprint("t", k)], "t%d: its first time handed over once", k)
		}
	})
}

// A Dispatch of a time fire that calls runtime.Goexit ends its own goroutine, not the
// time triggers: later times are still handed over.
func TestDispatchGoexitKeepsTheScheduler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var times []time.Time
		d := funcDispatcher(func(_ context.Context, _ *bgtask.Registration, details any, _ bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
			mu.Lock()
			times = append(times, details.(*bgtask.TimeTriggerDetails).ScheduledAt)
			first := len(times) == 1
			mu.Unlock()
			if first {
				runtime.Goexit()
			}
			return bgtask.CompletedEventArgs{}, bgtask.Allowed, nil
		})
		h := dispatchingHost(t, newMemStore(), d, nopTask)
		_, err := h.Register(bgtask.Builder{Name: "tick", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
		require.NoError(t, err)
		time.Sleep(3 * time.Minute)
		synctest.Wait()
		mu.Lock()
		assert.Len(t, times, 3, "every time handed over, the one whose Dispatch ended its goroutine included")
		mu.Unlock()
		require.NoError(t, h.Shutdown(t.Context()))
	})
}

// The last result of a dispatched registration stays in this process: the store, which
// every process of the fleet shares, keeps the last results of the registrations that run
// here only.
func TestDispatchedLastResultIsNotStored(t *testing.T) {
	s := newMemStore()
	sys := &bgtask.SystemTrigger{Type: bgtask.SystemTriggerUserPresent}
	h := dispatchingHost(t, s, &queue{}, func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	reg, err := h.Register(bgtask.Builder{Name: "x", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
	require.NoError(t, err)
	local, err := h.Register(bgtask.Builder{Name: "local", TaskEntryPoint: "job", Trigger: sys})
	require.NoError(t, err)
	_, err = h.RunInstance(t.Context(), reg, uuid.New(), &bgtask.ApplicationTriggerDetails{})
	require.NoError(t, err)
	ran, err := h.RunInstance(t.Context(), local, uuid.New(), nil)
	require.NoError(t, err)
	_, ok := reg.LastResult()
	assert.True(t, ok, "this process's own")
	require.NoError(t, h.Shutdown(t.Context()))

	again := dispatchingHost(t, s, &queue{}, func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	r, ok := again.Lookup(reg.TaskID())
	require.True(t, ok)
	_, ok = r.LastResult()
	assert.False(t, ok, "not stored")
	r, ok = again.Lookup(local.TaskID())
	require.True(t, ok)
	last, ok := r.LastResult()
	assert.True(t, ok, "stored: it runs here only")
	assert.Equal(t, ran.InstanceID, last.InstanceID)
	require.NoError(t, again.Shutdown(t.Context()))
}

// A OneShot registration's fire, once the dispatcher took it, keeps the registration, here
// and in the store, until its instance starts: whichever process runs the fire must still
// know the registration. Its later fires are refused here.
func TestDispatchedOneShotStaysUntilItsInstanceStarts(t *testing.T) {
	s := newMemStore()
	q := &queue{}
	h := dispatchingHost(t, s, q, nopTask)
	trig := &bgtask.ApplicationTrigger{OneShot: true}
	r, err := h.Register(bgtask.Builder{Name: "once", TaskEntryPoint: "job", Trigger: trig})
	require.NoError(t, err)
	res, err := trig.Request(t.Context(), nil)
	require.NoError(t, err)
	assert.Equal(t, bgtask.Allowed, res)
	res, err = trig.Request(t.Context(), nil)
	require.NoError(t, err)
	assert.Equal(t, bgtask.DisabledByPolicy, res, "it fires once")
	assert.Len(t, q.taken(), 1)
	require.NoError(t, h.Shutdown(t.Context()))

	other := dispatchingHost(t, s, &queue{}, nopTask) // another process, or this one restarted
	restored, ok := other.Lookup(r.TaskID())
	require.True(t, ok, "kept in the store until its instance starts")
	_, err = other.RunInstance(t.Context(), restored, uuid.New(), q.taken()[0].details)
	require.NoError(t, err)
	require.NoError(t, other.Shutdown(t.Context()))

	last := dispatchingHost(t, s, &queue{}, nopTask)
	_, ok = last.Lookup(r.TaskID())
	assert.False(t, ok, "its instance's start unregistered it, in the store too")
	require.NoError(t, last.Shutdown(t.Context()))
}

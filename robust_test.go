package bgtask_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

func TestShutdownFromTwoCallbacksReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		trig := bgtask.NewApplicationTrigger()
		results := make(chan error, 2)
		both := make(chan struct{}) // both instances start before either ends
		for _, name := range []string{"a", "b"} {
			r := mustRegister(t, h, bgtask.Builder{Name: name, Trigger: trig,
				Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { <-both; return nil })})
			r.OnCompleted(func(bgtask.CompletedEventArgs) { results <- h.Shutdown(context.Background()) })
		}
		_, err := trig.Request(context.Background(), nil)
		require.NoError(t, err)
		close(both)
		for range 2 {
			var se *bgtask.ShutdownError
			assert.ErrorAs(t, <-results, &se, "each names what it could not wait for")
		}
		require.NoError(t, h.Shutdown(context.Background()), "from outside, once the handlers returned")
	})
}

func TestWaitingFireGetsTheSlotBeforeARegistrationFiresAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithPolicy(bgtask.Policy{MaxConcurrent: 1}))
		var busyRuns atomic.Int32
		mustRegister(t, h, bgtask.Builder{Name: "busy", Trigger: &bgtask.TimeTrigger{FreshnessTime: 5 * time.Second},
			Task: bgtask.TaskFunc(func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
				busyRuns.Add(1)
				select { // longer than its period: a catch-up is due at each end
				case <-ctx.Done():
				case <-time.After(10 * time.Second):
				}
				return nil
			})})
		trig := bgtask.NewApplicationTrigger()
		ran := make(chan int32, 1)
		mustRegister(t, h, bgtask.Builder{Name: "other", Trigger: trig, Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error {
			ran <- busyRuns.Load()
			return nil
		})})
		time.Sleep(6 * time.Second) // busy runs
		res, err := trig.Request(context.Background(), nil)
		require.NoError(t, err)
		require.Equal(t, bgtask.Allowed, res)
		select {
		case n := <-ran:
			assert.Equal(t, int32(1), n, "other runs when busy's first instance ends")
		case <-time.After(time.Minute):
			t.Error("other never got the slot")
		}
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestUnregisterCancelsARunningOneShot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		trig := &bgtask.ApplicationTrigger{OneShot: true}
		insts := make(chan bgtask.BackgroundTaskInstance, 1)
		r := mustRegister(t, h, bgtask.Builder{Name: "once", Trigger: trig, Task: started(insts, func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
			<-ctx.Done()
			return nil
		})})
		done := make(chan bgtask.CompletedEventArgs, 1)
		r.OnCompleted(func(e bgtask.CompletedEventArgs) { done <- e })
		_, err := trig.Request(context.Background(), nil)
		require.NoError(t, err)
		<-insts
		assert.Empty(t, h.AllTasks(), "unregistered as it started")
		r.Unregister(true)
		e := <-done
		assert.True(t, e.Canceled)
		assert.Equal(t, bgtask.Abort, e.Reason)
		r.Unregister(true) // again: nothing
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

// stopper is a condition whose stop func runs stop.
type stopper struct{ stop func() }

func (s stopper) Satisfied(*bgtask.Host) bool              { return true }
func (s stopper) Watch(*bgtask.Host, func()) (stop func()) { return s.stop }

func TestGoexitInAConditionStopStillStopsTheOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil))
		stopped := make(chan struct{})
		r := mustRegister(t, h, bgtask.Builder{Name: "c", Trigger: bgtask.NewApplicationTrigger(), Task: nopTask,
			Conditions: []bgtask.Condition{stopper{runtime.Goexit}, stopper{func() { close(stopped) }}}})
		r.Unregister(false)
		<-stopped
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

// embedded is a trigger type that holds a nil trigger.
type embedded struct{ *bgtask.ApplicationTrigger }

func TestTriggerHoldingANilTriggerIsRefused(t *testing.T) {
	h := newHost(t)
	_, err := h.Register(bgtask.Builder{Name: "e", Trigger: embedded{}, Task: nopTask})
	assert.ErrorIs(t, err, bgtask.ErrNoTrigger)
	require.NoError(t, h.Shutdown(context.Background()))
}

func TestArgOfANilValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type got struct {
			a   any
			p   *int
			err error
		}
		out := make(chan got, 1)
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			a, err1 := bgtask.Arg[any](inst, "k")
			p, err2 := bgtask.Arg[*int](inst, "k")
			_, err3 := bgtask.Arg[int](inst, "k")
			assert.NoError(t, err1)
			assert.NoError(t, err2)
			out <- got{a, p, err3}
			return nil
		})
		f.request(t, map[string]any{"k": nil})
		g := <-out
		assert.Nil(t, g.a)
		assert.Nil(t, g.p)
		assert.ErrorIs(t, g.err, bgtask.ErrInvalidArgument, "an int cannot be nil")
		<-f.done
		f.shutdown(t)
	})
}

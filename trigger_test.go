package bgtask_test

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

func TestRequestResults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			<-release
			return nil
		})
		f.request(t, nil)
		res, err := f.trig.Request(context.Background(), nil)
		require.NoError(t, err)
		assert.Equal(t, bgtask.CurrentlyRunning, res)

		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		res, err = f.trig.Request(ctx, nil)
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, bgtask.UnknownError, res)

		res, err = bgtask.NewApplicationTrigger().Request(context.Background(), nil)
		assert.ErrorIs(t, err, bgtask.ErrNotRegistered)
		assert.Equal(t, bgtask.UnknownError, res)
		res, err = (*bgtask.ApplicationTrigger)(nil).Request(context.Background(), nil)
		assert.ErrorIs(t, err, bgtask.ErrNotRegistered)
		assert.Equal(t, bgtask.UnknownError, res)

		close(release)
		<-f.done
		f.shutdown(t)
		res, err = f.trig.Request(context.Background(), nil)
		require.NoError(t, err)
		assert.Equal(t, bgtask.DisabledByPolicy, res, "after Shutdown")
		_, err = f.host.Register(bgtask.Builder{Name: "late", Trigger: f.trig, Task: bgtask.TaskFunc(nil)})
		assert.ErrorIs(t, err, bgtask.ErrHostClosed)
	})
}

func TestRequestWithSeveralRegistrations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		trig := bgtask.NewApplicationTrigger()
		release := make(chan struct{})
		block := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { <-release; return nil })
		a := mustRegister(t, h, bgtask.Builder{Name: "a", Task: block, Trigger: trig})
		res, err := trig.Request(context.Background(), nil)
		require.NoError(t, err)
		assert.Equal(t, bgtask.Allowed, res)
		mustRegister(t, h, bgtask.Builder{Name: "b", Task: block, Trigger: trig})

		res, _ = trig.Request(context.Background(), nil)
		assert.Equal(t, bgtask.Allowed, res, "b accepted while a runs")
		res, _ = trig.Request(context.Background(), nil)
		assert.Equal(t, bgtask.CurrentlyRunning, res, "both running")

		a.Unregister(false)
		res, _ = trig.Request(context.Background(), nil)
		assert.Equal(t, bgtask.CurrentlyRunning, res, "b still running, a gone")
		close(release)
		require.NoError(t, h.Shutdown(context.Background()))
		for _, r := range h.AllTasks() {
			r.Unregister(false)
		}
	})
}

func TestRequestDisabledWhenRegistrationsAreGone(t *testing.T) {
	f := newFixture(t, func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	f.reg.Unregister(false)
	res, err := f.trig.Request(context.Background(), nil)
	require.NoError(t, err)
	assert.Equal(t, bgtask.DisabledByPolicy, res)
	f.shutdown(t)
}

func TestTriggerDetailsCarryACopyOfTheArguments(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		seen := make(chan map[string]any, 1)
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			args := inst.TriggerDetails().(*bgtask.ApplicationTriggerDetails).Arguments
			seen <- map[string]any{"url": args["url"]}
			args["url"] = "changed by the task"
			return nil
		})
		args := map[string]any{"url": "https://example.com/a"}
		f.request(t, args)
		args["url"] = "changed by the caller"
		<-f.done
		assert.Equal(t, "https://example.com/a", (<-seen)["url"])
		assert.Equal(t, "changed by the caller", args["url"])
		f.shutdown(t)
	})
}

func TestStrings(t *testing.T) {
	reasons := []string{"Abort", "Terminating", "LoggingOff", "ServicingUpdate", "IdleTask", "Uninstall",
		"ConditionLoss", "SystemPolicy", "QuietHoursEntered", "ExecutionTimeExceeded", "ResourceRevocation", "EnergySaver"}
	for k, want := range reasons {
		assert.Equal(t, want, bgtask.CancellationReason(k).String())
	}
	assert.Equal(t, "CancellationReason(12)", bgtask.CancellationReason(12).String())
	assert.Equal(t, "CancellationReason(-1)", bgtask.CancellationReason(-1).String())
	assert.Equal(t, 9, int(bgtask.ExecutionTimeExceeded))
	assert.Equal(t, "bgtask: canceled: IdleTask", (&bgtask.CanceledError{Reason: bgtask.IdleTask}).Error())

	for k, want := range []string{"Allowed", "CurrentlyRunning", "DisabledByPolicy", "UnknownError"} {
		assert.Equal(t, want, bgtask.ApplicationTriggerResult(k).String())
	}
	assert.Equal(t, "ApplicationTriggerResult(7)", bgtask.ApplicationTriggerResult(7).String())
}

package bgtask_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

func TestShutdownCancelsWithTerminatingAndWaitsForCompleted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			d := inst.GetDeferral()
			context.AfterFunc(ctx, d.Complete)
			return nil
		})
		unblock := make(chan struct{})
		f.reg.OnCompleted(func(bgtask.CompletedEventArgs) { <-unblock })
		f.request(t, nil)
		synctest.Wait()

		returned := make(chan error, 1)
		go func() { returned <- f.host.Shutdown(context.Background()) }()
		e := <-f.done
		assert.True(t, e.Canceled)
		assert.Equal(t, bgtask.Terminating, e.Reason)
		synctest.Wait()
		assert.Empty(t, returned, "Shutdown returned before every Completed handler ran")
		close(unblock)
		assert.NoError(t, <-returned)
		assert.NoError(t, f.host.Shutdown(context.Background()), "second call")
	})
}

func TestShutdownNamesTerminatedInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.GetDeferral()
			<-release
			return nil
		})
		f.request(t, nil)
		synctest.Wait()
		start := time.Now()
		err := f.host.Shutdown(context.Background())
		assert.Equal(t, bgtask.DefaultGracePeriod, time.Since(start))
		require.ErrorIs(t, err, bgtask.ErrTerminated)
		e := <-f.done
		assert.ErrorIs(t, e.Err, bgtask.ErrTerminated)
		var se *bgtask.ShutdownError
		require.ErrorAs(t, err, &se)
		require.Len(t, se.Instances, 1)
		assert.Equal(t, e.InstanceID, se.Instances[0].InstanceID)
		assert.Equal(t, bgtask.InstanceTerminated, se.Instances[0].State)
		assert.Equal(t, bgtask.Terminating, se.Instances[0].Reason)
		assert.Len(t, se.Instances[0].Deferrals, 1)
		assert.NoError(t, se.Err)
		for _, s := range []string{`"task"`, e.InstanceID.String(), "1 deferral(s) outstanding", "terminated after Terminating"} {
			assert.Contains(t, err.Error(), s)
		}
		assert.Contains(t, err.Error(), "its goroutines still running", "Run has not returned")
		assert.Equal(t, err.Error(), f.host.Shutdown(context.Background()).Error(), "second call")
		close(release)
		synctest.Wait() // Run returned
		err = f.host.Shutdown(context.Background())
		assert.ErrorIs(t, err, bgtask.ErrTerminated, "a third call still names the instance terminated")
		assert.Contains(t, err.Error(), "terminated after Terminating, 1 deferral(s) outstanding", "as it is now")
		assert.NotContains(t, err.Error(), "still running")
	})
}

func TestShutdownDeadlineNamesAbandonedInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			<-release
			return nil
		})
		f.request(t, nil)
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := f.host.Shutdown(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var se *bgtask.ShutdownError
		require.ErrorAs(t, err, &se)
		require.Len(t, se.Instances, 1)
		assert.Equal(t, bgtask.InstanceCanceling, se.Instances[0].State, "abandoned in its grace period")
		assert.NotErrorIs(t, err, bgtask.ErrTerminated)
		assert.Contains(t, err.Error(), "canceled after Terminating, in its grace period, 0 deferral(s) outstanding")
		<-f.done // the grace period still ends it
		close(release)
	})
}

func TestShutdownNamesEarlierTerminatedInstancesStillRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			<-release
			return nil
		}, bgtask.WithPolicy(bgtask.Policy{MaxExecutionTime: time.Second}))
		f.request(t, nil)
		e := <-f.done
		require.ErrorIs(t, e.Err, bgtask.ErrTerminated)
		err := f.host.Shutdown(context.Background())
		require.Error(t, err)
		assert.ErrorIs(t, err, bgtask.ErrTerminated, "an instance terminated before Shutdown counts too")
		assert.Contains(t, err.Error(), e.InstanceID.String()+": terminated after ExecutionTimeExceeded, its goroutines still running")
		close(release)
		synctest.Wait()
		assert.NoError(t, f.host.Shutdown(context.Background()), "once the goroutine returned")
	})
}

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

func TestSuspendBlocksCheckpointUntilResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		passed := make(chan error)
		proceed := make(chan struct{})
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			for range 2 {
				<-proceed
				passed <- inst.Checkpoint()
			}
			return nil
		})
		f.request(t, nil)
		synctest.Wait()
		insts := make(chan bgtask.BackgroundTaskInstance, 1)
		f.reg.OnProgress(nil)
		f.host.Resume() // without Suspend: nothing happens
		f.host.Suspend()
		f.host.Suspend() // while suspended: nothing happens
		proceed <- struct{}{}
		synctest.Wait()
		assert.Empty(t, passed, "Checkpoint did not block while suspended")
		res, err := f.trig.Request(context.Background(), nil)
		require.NoError(t, err)
		assert.Equal(t, bgtask.DisabledByPolicy, res)
		f.host.Resume()
		assert.NoError(t, <-passed)

		f.host.Suspend()
		proceed <- struct{}{}
		synctest.Wait()
		f.host.Cancel(bgtask.Abort) // a canceled instance is let through
		err = <-passed
		assert.ErrorIs(t, err, bgtask.ErrCanceled)
		e := <-f.done
		assert.True(t, e.Canceled)
		f.host.Resume()
		close(insts)
		f.shutdown(t)
	})
}

func TestSuspendedCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		insts := make(chan bgtask.BackgroundTaskInstance, 1)
		f := newFixture(t, started(insts, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			<-ctx.Done()
			return nil
		}))
		f.request(t, nil)
		inst := <-insts
		for range 3 {
			f.host.Suspend()
			f.host.Suspend()
			f.host.Resume()
		}
		assert.Equal(t, uint32(3), inst.SuspendedCount())
		f.shutdown(t)
	})
}

func TestExecutionTimeKeepsCountingWhileSuspended(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			<-ctx.Done()
			return nil
		}, bgtask.WithPolicy(bgtask.Policy{MaxExecutionTime: 10 * time.Second}))
		start := time.Now()
		f.request(t, nil)
		synctest.Wait()
		f.host.Suspend()
		e := <-f.done
		assert.Equal(t, 10*time.Second, time.Since(start))
		assert.Equal(t, bgtask.ExecutionTimeExceeded, e.Reason)
		f.host.Resume()
		f.shutdown(t)
	})
}

func TestIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			for p := range uint32(5) { // active every second for 5s
				time.Sleep(time.Second)
				inst.SetProgress(p)
			}
			_ = inst.Checkpoint()
			<-ctx.Done() // then idle
			return nil
		}, bgtask.WithPolicy(bgtask.Policy{IdleTimeout: 2 * time.Second}))
		start := time.Now()
		f.request(t, nil)
		e := <-f.done
		assert.Equal(t, 7*time.Second, time.Since(start), "canceled IdleTimeout after the last activity")
		assert.Equal(t, bgtask.IdleTask, e.Reason)
		f.shutdown(t)
	})
}

func TestIdleDetectionPausesWhileSuspended(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			<-ctx.Done()
			return nil
		}, bgtask.WithPolicy(bgtask.Policy{IdleTimeout: 4 * time.Second}))
		start := time.Now()
		f.request(t, nil)
		time.Sleep(time.Second)
		f.host.Suspend()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		assert.False(t, f.pending(), "idle while suspended")
		f.host.Resume()
		e := <-f.done
		assert.Equal(t, bgtask.IdleTask, e.Reason)
		assert.Equal(t, 14*time.Second, time.Since(start), "1s before, 10s suspended, 3s after")
		f.shutdown(t)
	})
}

func TestMaxConcurrentQueuesFiresInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithPolicy(bgtask.Policy{MaxConcurrent: 2}))
		order := make(chan string, 10)
		release := make(chan struct{})
		var trigs []*bgtask.ApplicationTrigger
		for _, name := range []string{"a", "b", "c", "d", "e"} {
			trig := bgtask.NewApplicationTrigger()
			_, err := h.Register(bgtask.Builder{Name: name, Trigger: trig,
				Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
					order <- inst.Task().Name()
					<-release
					return nil
				})})
			require.NoError(t, err)
			trigs = append(trigs, trig)
		}
		for _, k := range []int{0, 1, 3, 2, 4} {
			res, err := trigs[k].Request(context.Background(), nil)
			require.NoError(t, err)
			assert.Equal(t, bgtask.Allowed, res, "a queued fire is accepted")
		}
		synctest.Wait()
		assert.Len(t, order, 2)
		for k := range 3 {
			release <- struct{}{} // one finishes: exactly one queued fire starts
			synctest.Wait()
			assert.Len(t, order, 3+k)
		}
		close(release)
		require.NoError(t, h.Shutdown(context.Background()))
		close(order)
		var got []string
		for n := range order {
			got = append(got, n)
		}
		assert.ElementsMatch(t, []string{"a", "b"}, got[:2])
		assert.Equal(t, []string{"d", "c", "e"}, got[2:], "queued fires start in the order they came")
	})
}

func TestMemoryPolicyValidation(t *testing.T) {
	for _, fr := range []float64{-0.1, 1.5} {
		_, err := bgtask.NewHost(bgtask.WithPolicy(bgtask.Policy{MemoryLimitFraction: fr}))
		assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	}
	for _, p := range []bgtask.Policy{{MemoryPressurePeriod: -1}, {MemoryCheckInterval: -1}} {
		_, err := bgtask.NewHost(bgtask.WithPolicy(p))
		assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	}
}

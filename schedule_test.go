package bgtask_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

// runRecord records one instance: when it started and what its trigger said.
type runRecord struct {
	at      time.Duration // since the test began
	details any
}

// recorder is a task that records its runs on a channel and then runs body.
type recorder struct {
	start time.Time
	runs  chan runRecord
	body  func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error
}

func newRecorder(body func(context.Context, bgtask.BackgroundTaskInstance) error) *recorder {
	return &recorder{start: time.Now(), runs: make(chan runRecord, 100), body: body}
}

func (r *recorder) Run(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
	r.runs <- runRecord{at: time.Since(r.start), details: inst.TriggerDetails()}
	if r.body == nil {
		return nil
	}
	return r.body(ctx, inst)
}

// drain returns the runs recorded so far.
func (r *recorder) drain() []runRecord {
	var out []runRecord
	for {
		select {
		case x := <-r.runs:
			out = append(out, x)
		default:
			return out
		}
	}
}

func scheduledAt(t *testing.T, start time.Time, x runRecord) time.Duration {
	t.Helper()
	d, ok := x.details.(*bgtask.TimeTriggerDetails)
	require.True(t, ok, "details %T", x.details)
	return d.ScheduledAt.Sub(start)
}

func TestTimeTriggerFiresOnItsGridWithoutDrift(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		rec := newRecorder(func(context.Context, bgtask.BackgroundTaskInstance) error {
			time.Sleep(3 * time.Second) // a run takes time; the next fire must not drift by it
			return nil
		})
		mustRegister(t, h, bgtask.Builder{Name: "tick", Task: rec, Trigger: &bgtask.TimeTrigger{FreshnessTime: 10 * time.Second}})
		time.Sleep(45 * time.Second)
		synctest.Wait()
		runs := rec.drain()
		require.Len(t, runs, 4)
		for k, x := range runs {
			want := time.Duration(k+1) * 10 * time.Second
			assert.Equal(t, want, x.at)
			assert.Equal(t, want, scheduledAt(t, rec.start, x))
		}
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestTimeTriggerCoalescesMissedFiresIntoOneCatchUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		first := true
		rec := newRecorder(func(context.Context, bgtask.BackgroundTaskInstance) error {
			if first {
				first = false
				time.Sleep(35 * time.Second) // from 10s to 45s: misses 20s, 30s and 40s
			}
			return nil
		})
		mustRegister(t, h, bgtask.Builder{Name: "slow", Task: rec, Trigger: &bgtask.TimeTrigger{FreshnessTime: 10 * time.Second}})
		time.Sleep(55 * time.Second)
		synctest.Wait()
		runs := rec.drain()
		require.Len(t, runs, 3)
		assert.Equal(t, 10*time.Second, runs[0].at)
		assert.Equal(t, 45*time.Second, runs[1].at, "the catch-up starts as soon as the registration is free")
		assert.Equal(t, 40*time.Second, scheduledAt(t, rec.start, runs[1]), "with the latest missed time")
		assert.Equal(t, 50*time.Second, runs[2].at, "later fires stay on the grid")
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestTimeTriggerOneShot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		rec := newRecorder(nil)
		reg := mustRegister(t, h, bgtask.Builder{Name: "once", Task: rec, Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute, OneShot: true}})
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		assert.Len(t, rec.drain(), 1)
		_, ok := h.Lookup(reg.TaskID())
		assert.False(t, ok, "a one-shot registration is unregistered when its instance starts")
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestTimeTriggerUnregisterStopsFires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		a, b := newRecorder(nil), newRecorder(nil)
		ra := mustRegister(t, h, bgtask.Builder{Name: "a", Task: a, Trigger: &bgtask.TimeTrigger{FreshnessTime: 10 * time.Second}})
		mustRegister(t, h, bgtask.Builder{Name: "b", Task: b, Trigger: &bgtask.TimeTrigger{FreshnessTime: 15 * time.Second}})
		time.Sleep(25 * time.Second)
		ra.Unregister(false)
		time.Sleep(35 * time.Second)
		synctest.Wait()
		assert.Len(t, a.drain(), 2)
		assert.Len(t, b.drain(), 4)
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestTimeTriggerFreshnessValidation(t *testing.T) {
	task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	for _, tc := range []struct {
		name      string
		minimum   time.Duration
		freshness time.Duration
		ok        bool
	}{
		{"zero", 0, 0, false},
		{"negative", 0, -time.Second, false},
		{"below the default minimum", 0, bgtask.DefaultMinFreshness - time.Millisecond, false},
		{"at the default minimum", 0, bgtask.DefaultMinFreshness, true},
		{"below the policy minimum", 15 * time.Minute, 14 * time.Minute, false},
		{"at the policy minimum", 15 * time.Minute, 15 * time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, bgtask.WithPolicy(bgtask.Policy{MinFreshness: tc.minimum}))
			_, err := h.Register(bgtask.Builder{Name: "t", Task: task, Trigger: &bgtask.TimeTrigger{FreshnessTime: tc.freshness}})
			if tc.ok {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, bgtask.ErrInvalidFreshness)
			}
			require.NoError(t, h.Shutdown(context.Background()))
		})
	}
}

func TestTimeTriggerHeldWhileSuspended(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		rec := newRecorder(nil)
		mustRegister(t, h, bgtask.Builder{Name: "t", Task: rec, Trigger: &bgtask.TimeTrigger{FreshnessTime: 10 * time.Second}})
		h.Suspend()
		time.Sleep(35 * time.Second)
		synctest.Wait()
		assert.Empty(t, rec.drain(), "fired while suspended")
		h.Resume()
		synctest.Wait()
		runs := rec.drain()
		require.Len(t, runs, 1)
		assert.Equal(t, 35*time.Second, runs[0].at)
		assert.Equal(t, 30*time.Second, scheduledAt(t, rec.start, runs[0]))
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestRegistrationKeepsTheTriggerAsRegistered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		timed, app := newRecorder(nil), newRecorder(nil)
		tt := &bgtask.TimeTrigger{FreshnessTime: 10 * time.Second}
		mustRegister(t, h, bgtask.Builder{Name: "timed", Task: timed, Trigger: tt})
		at := bgtask.NewApplicationTrigger()
		mustRegister(t, h, bgtask.Builder{Name: "app", Task: app, Trigger: at})
		tt.FreshnessTime = time.Hour // changed after Register: no effect
		at.OneShot = true
		time.Sleep(25 * time.Second)
		for range 2 {
			_, err := at.Request(context.Background(), nil)
			require.NoError(t, err)
			synctest.Wait()
		}
		assert.Len(t, timed.drain(), 2, "still every 10s")
		assert.Len(t, app.drain(), 2, "still registered after its first run")
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

// A burst: more time triggers due at one instant than the scheduler fires per batch. The
// instances that end during it are retired after it, and every fire still runs once.
func TestTimeTriggerBurstRunsEachFireOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		var mu sync.Mutex
		runs := map[*bgtask.Registration]int{}
		task := bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			mu.Lock()
			runs[inst.Task()]++
			mu.Unlock()
			return nil
		})
		var completed atomic.Int64
		h.Subscribe(func(bgtask.Event) { completed.Add(1) }, bgtask.EventCompleted)
		const n = 1000
		for range n {
			mustRegister(t, h, bgtask.Builder{Name: "burst", Task: task, Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
		}
		time.Sleep(3*time.Minute + time.Second)
		synctest.Wait()
		require.NoError(t, h.Shutdown(context.Background()))
		assert.Equal(t, int64(3*n), completed.Load())
		require.Len(t, runs, n)
		for _, k := range runs {
			require.Equal(t, 3, k)
		}
	})
}

// Shutdown in the middle of a burst: the instances that ended while the scheduler fired it
// are retired when the scheduler stops, so Shutdown returns and each gets its Completed.
func TestShutdownDuringABurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		var once sync.Once
		done := make(chan error, 1)
		task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error {
			once.Do(func() { go func() { done <- h.Shutdown(context.Background()) }() })
			return nil
		})
		var launched, completed atomic.Int64
		h.Subscribe(func(e bgtask.Event) {
			if e.Kind == bgtask.EventLaunched {
				launched.Add(1)
			} else {
				completed.Add(1)
			}
		}, bgtask.EventLaunched, bgtask.EventCompleted)
		for range 1000 {
			mustRegister(t, h, bgtask.Builder{Name: "burst", Task: task, Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
		}
		time.Sleep(time.Minute)
		require.NoError(t, <-done)
		assert.Positive(t, launched.Load())
		assert.Equal(t, launched.Load(), completed.Load())
	})
}

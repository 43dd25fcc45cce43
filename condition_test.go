package bgtask_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

func TestHeldFireStartsWhenConditionHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		online := bgtask.NewCondition(false)
		trig := bgtask.NewApplicationTrigger()
		rec := newRecorder(nil)
		mustRegister(t, h, bgtask.Builder{Name: "sync", Task: rec, Trigger: trig, Conditions: []bgtask.Condition{online}})
		for _, n := range []int{1, 2, 3} {
			res, err := trig.Request(context.Background(), map[string]any{"n": n})
			require.NoError(t, err)
			assert.Equal(t, bgtask.Allowed, res, "a held fire is accepted")
		}
		synctest.Wait()
		assert.Empty(t, rec.drain(), "started while the condition did not hold")
		online.Set(true)
		synctest.Wait()
		runs := rec.drain()
		require.Len(t, runs, 1, "held fires coalesce into one")
		assert.Equal(t, 3, runs[0].details.(*bgtask.ApplicationTriggerDetails).Arguments["n"], "with the latest arguments")
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestCancelOnConditionLoss(t *testing.T) {
	for _, cancelOnLoss := range []bool{true, false} {
		t.Run(map[bool]string{true: "cancel", false: "run on"}[cancelOnLoss], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHost(t)
				online := bgtask.NewCondition(true)
				trig := bgtask.NewApplicationTrigger()
				release := make(chan struct{})
				reg, err := h.Register(bgtask.Builder{Name: "sync", Trigger: trig, CancelOnConditionLoss: cancelOnLoss,
					Conditions: []bgtask.Condition{online},
					Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
						select {
						case <-ctx.Done():
						case <-release:
						}
						return nil
					})})
				require.NoError(t, err)
				done := make(chan bgtask.CompletedEventArgs, 1)
				reg.OnCompleted(func(e bgtask.CompletedEventArgs) { done <- e })
				_, err = trig.Request(context.Background(), nil)
				require.NoError(t, err)
				synctest.Wait()
				online.Set(false)
				synctest.Wait()
				if cancelOnLoss {
					e := <-done
					assert.True(t, e.Canceled)
					assert.Equal(t, bgtask.ConditionLoss, e.Reason)
				} else {
					assert.Empty(t, done, "canceled without CancelOnConditionLoss")
					close(release)
					assert.False(t, (<-done).Canceled)
				}
				require.NoError(t, h.Shutdown(context.Background()))
			})
		})
	}
}

func TestSystemConditions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := new(syncBuffer)
		h := newHost(t, bgtask.WithLogger(slogTo(log)))
		holds := map[bgtask.SystemConditionType]bool{
			bgtask.SystemConditionUserPresent: true, bgtask.SystemConditionUserNotPresent: false,
			bgtask.SystemConditionInternetAvailable: true, bgtask.SystemConditionInternetNotAvailable: false,
			bgtask.SystemConditionSessionConnected: true, bgtask.SystemConditionSessionDisconnected: false,
			bgtask.SystemConditionFreeNetworkAvailable: true, bgtask.SystemConditionBackgroundWorkCostNotHigh: true,
		}
		for c, want := range holds {
			assert.Equal(t, want, bgtask.SystemCondition{Type: c}.Satisfied(h), "initial %v", c)
		}
		h.SetCondition(bgtask.SystemConditionInternetNotAvailable, true)
		assert.False(t, bgtask.SystemCondition{Type: bgtask.SystemConditionInternetAvailable}.Satisfied(h), "the negation follows")
		assert.True(t, bgtask.SystemCondition{Type: bgtask.SystemConditionInternetNotAvailable}.Satisfied(h))

		h.SetCondition(99, true)
		assert.Contains(t, log.String(), "unknown type")

		trig := bgtask.NewApplicationTrigger()
		rec := newRecorder(nil)
		_, err := h.Register(bgtask.Builder{Name: "online", Task: rec, Trigger: trig,
			Conditions: []bgtask.Condition{bgtask.SystemCondition{Type: bgtask.SystemConditionInternetAvailable}}})
		require.NoError(t, err)
		_, err = trig.Request(context.Background(), nil)
		require.NoError(t, err)
		synctest.Wait()
		assert.Empty(t, rec.drain())
		h.SetCondition(bgtask.SystemConditionInternetAvailable, true)
		synctest.Wait()
		assert.Len(t, rec.drain(), 1)
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

// flag is a user-written condition: it reports its changes from its own goroutine.
type flag struct {
	mu      sync.Mutex
	on      bool
	changed []func()
}

func (f *flag) Satisfied(*bgtask.Host) bool { f.mu.Lock(); defer f.mu.Unlock(); return f.on }

func (f *flag) Watch(_ *bgtask.Host, changed func()) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changed = append(f.changed, changed)
	return func() {}
}

func (f *flag) set(on bool) {
	f.mu.Lock()
	f.on = on
	notify := f.changed
	f.mu.Unlock()
	done := make(chan struct{})
	go func() { // from another goroutine, as a watcher of some outside state would
		defer close(done)
		for _, c := range notify {
			c()
		}
	}()
	<-done
}

func TestUserWrittenCondition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		f := &flag{}
		trig := bgtask.NewApplicationTrigger()
		rec := newRecorder(nil)
		mustRegister(t, h, bgtask.Builder{Name: "u", Task: rec, Trigger: trig, Conditions: []bgtask.Condition{f, bgtask.NewCondition(true)}})
		_, err := trig.Request(context.Background(), nil)
		require.NoError(t, err)
		synctest.Wait()
		assert.Empty(t, rec.drain())
		f.set(true)
		synctest.Wait()
		assert.Len(t, rec.drain(), 1)
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

// panicky is a condition whose methods panic.
type panicky struct{ inWatch bool }

func (p panicky) Satisfied(*bgtask.Host) bool { panic("satisfied") }
func (p panicky) Watch(*bgtask.Host, func()) func() {
	if p.inWatch {
		panic("watch")
	}
	return nil
}

func TestConditionPanicsAreRecovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := new(syncBuffer)
		h := newHost(t, bgtask.WithLogger(slogTo(log)))
		trig := bgtask.NewApplicationTrigger()
		rec := newRecorder(nil)
		reg := mustRegister(t, h, bgtask.Builder{Name: "p", Task: rec, Trigger: trig, Conditions: []bgtask.Condition{panicky{}, panicky{inWatch: true}}})
		_, err := trig.Request(context.Background(), nil)
		require.NoError(t, err)
		synctest.Wait()
		assert.Empty(t, rec.drain(), "a condition that panics does not hold")
		reg.Unregister(false)
		require.NoError(t, h.Shutdown(context.Background()))
		assert.Contains(t, log.String(), "panic in Condition.Satisfied")
		assert.Contains(t, log.String(), "panic in Condition.Watch")
	})
}

func TestConditionBadInput(t *testing.T) {
	h := newHost(t)
	task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	for _, c := range []bgtask.Condition{nil, bgtask.SystemCondition{Type: 0}, bgtask.SystemCondition{Type: 9}} {
		_, err := h.Register(bgtask.Builder{Name: "x", Task: task, Trigger: bgtask.NewApplicationTrigger(), Conditions: []bgtask.Condition{c}})
		assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	}
	var zero bgtask.Switch
	assert.False(t, zero.Satisfied(h))
	require.NoError(t, h.Shutdown(context.Background()))
}

func TestSystemConditionTypeStrings(t *testing.T) {
	names := []string{"UserPresent", "UserNotPresent", "InternetAvailable", "InternetNotAvailable",
		"SessionConnected", "SessionDisconnected", "FreeNetworkAvailable", "BackgroundWorkCostNotHigh"}
	for k, want := range names {
		assert.Equal(t, want, bgtask.SystemConditionType(k+1).String())
	}
	assert.Equal(t, "SystemConditionType(0)", bgtask.SystemConditionType(0).String())
}

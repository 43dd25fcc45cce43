package bgtask_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

func TestLastProgressArrivesBeforeCompleted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			for p := range uint32(1000) {
				inst.SetProgress(p + 1)
			}
			return nil
		})
		var events []string
		var last uint32
		done := make(chan struct{})
		f.reg.OnProgress(func(e bgtask.ProgressEventArgs) {
			assert.Greater(t, e.Progress, last, "progress went backwards")
			last = e.Progress
			events = append(events, "progress")
		})
		f.reg.OnCompleted(func(e bgtask.CompletedEventArgs) {
			assert.Equal(t, uint32(1000), e.Progress)
			events = append(events, "completed")
			close(done)
		})
		f.request(t, nil)
		<-done
		<-f.done
		assert.Equal(t, uint32(1000), last)
		assert.Equal(t, "completed", events[len(events)-1])
		assert.Equal(t, "progress", events[len(events)-2])
		f.shutdown(t)
	})
}

func TestBlockedHandlerBlocksNoTaskNorOtherRegistration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		unblock := make(chan struct{})
		looped := make(chan struct{})
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			for p := range uint32(10_000) {
				inst.SetProgress(p)
			}
			close(looped)
			return nil
		})
		f.reg.OnProgress(func(bgtask.ProgressEventArgs) { <-unblock })

		other := bgtask.NewApplicationTrigger()
		reg, err := f.host.Register(bgtask.Builder{Name: "other", Trigger: other,
			Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })})
		require.NoError(t, err)
		otherDone := make(chan struct{})
		reg.OnCompleted(func(bgtask.CompletedEventArgs) { close(otherDone) })

		f.request(t, nil)
		<-looped // SetProgress never blocked
		_, err = other.Request(context.Background(), nil)
		require.NoError(t, err)
		<-otherDone // the other registration's events were delivered
		assert.False(t, f.pending())
		close(unblock)
		<-f.done
		f.shutdown(t)
	})
}

func TestRemovedProgressHandlerIsNotCalled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		step := make(chan uint32)
		f := newFixture(t, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			for p := range step {
				inst.SetProgress(p)
			}
			return nil
		})
		var got []uint32
		remove := f.reg.OnProgress(func(e bgtask.ProgressEventArgs) { got = append(got, e.Progress) })
		f.reg.OnProgress(nil)()
		f.request(t, nil)
		step <- 1
		synctest.Wait()
		remove()
		remove()
		step <- 2
		close(step)
		e := <-f.done
		assert.Equal(t, uint32(2), e.Progress)
		assert.Equal(t, []uint32{1}, got)
		f.shutdown(t)
	})
}

func TestRegisterRejectsBadBuilders(t *testing.T) {
	task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	trig := bgtask.NewApplicationTrigger()
	for _, tc := range []struct {
		name string
		b    bgtask.Builder
		want error
	}{
		{"empty name", bgtask.Builder{Task: task, Trigger: trig}, bgtask.ErrInvalidArgument},
		{"nil trigger", bgtask.Builder{Name: "x", Task: task}, bgtask.ErrNoTrigger},
		{"typed nil trigger", bgtask.Builder{Name: "x", Task: task, Trigger: (*bgtask.ApplicationTrigger)(nil)}, bgtask.ErrNoTrigger},
		{"no task", bgtask.Builder{Name: "x", Trigger: trig}, bgtask.ErrNoTask},
		{"nil TaskFunc", bgtask.Builder{Name: "x", Trigger: trig, Task: bgtask.TaskFunc(nil)}, bgtask.ErrNoTask},
		{"unknown entry point", bgtask.Builder{Name: "x", TaskEntryPoint: "nope", Trigger: trig}, bgtask.ErrUnknownEntryPoint},
		{"negative time limit", bgtask.Builder{Name: "x", Task: task, Trigger: trig, MaxExecutionTime: -time.Second}, bgtask.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			r, err := h.Register(tc.b)
			assert.ErrorIs(t, err, tc.want)
			assert.Nil(t, r)
			assert.Empty(t, h.AllTasks())
		})
	}
	_, err := newHost(t).Register(bgtask.Builder{Name: "x", Trigger: trig, Task: bgtask.TaskFunc(nil)})
	assert.EqualError(t, err, `bgtask: registration "x": no task: Task is a nil bgtask.TaskFunc`, "says why a Task that is set is none")
}

func TestEntryPoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ran := make(chan string, 1)
		h, err := bgtask.NewHost(bgtask.WithEntryPoint("sync", bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			ran <- inst.Task().Name()
			return nil
		})))
		require.NoError(t, err)
		trig := bgtask.NewApplicationTrigger()
		mustRegister(t, h, bgtask.Builder{Name: "by name", TaskEntryPoint: "sync", Trigger: trig})
		_, err = trig.Request(context.Background(), nil)
		require.NoError(t, err)
		assert.Equal(t, "by name", <-ran)
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestOptionsRejectBadInput(t *testing.T) {
	task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	for _, tc := range []struct {
		name string
		opts []bgtask.Option
	}{
		{"negative time limit", []bgtask.Option{bgtask.WithPolicy(bgtask.Policy{MaxExecutionTime: -1})}},
		{"negative grace", []bgtask.Option{bgtask.WithPolicy(bgtask.Policy{GracePeriod: -1})}},
		{"negative idle", []bgtask.Option{bgtask.WithPolicy(bgtask.Policy{IdleTimeout: -1})}},
		{"negative freshness", []bgtask.Option{bgtask.WithPolicy(bgtask.Policy{MinFreshness: -1})}},
		{"negative concurrency", []bgtask.Option{bgtask.WithPolicy(bgtask.Policy{MaxConcurrent: -1})}},
		{"entry point without name", []bgtask.Option{bgtask.WithEntryPoint("", task)}},
		{"entry point without task", []bgtask.Option{bgtask.WithEntryPoint("x", nil)}},
		{"entry point bound twice", []bgtask.Option{bgtask.WithEntryPoint("x", task), bgtask.WithEntryPoint("x", task)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := bgtask.NewHost(tc.opts...)
			assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
			assert.Nil(t, h)
		})
	}
	h := newHost(t, bgtask.WithLogger(nil), bgtask.Option{})
	require.NoError(t, h.Shutdown(context.Background()))
}

func TestAllTasksAndLookup(t *testing.T) {
	h := newHost(t)
	task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	trig := bgtask.NewApplicationTrigger()
	var regs []*bgtask.Registration
	for _, name := range []string{"b", "a", "b", "c"} {
		r := mustRegister(t, h, bgtask.Builder{Name: name, Task: task, Trigger: trig})
		assert.Same(t, trig, r.Trigger())
		regs = append(regs, r)
	}
	all := h.AllTasks()
	require.Len(t, all, 4)
	for k := 1; k < len(all); k++ {
		a, b := all[k-1], all[k]
		assert.True(t, a.Name() < b.Name() || a.Name() == b.Name() && a.TaskID().String() < b.TaskID().String())
	}
	got, ok := h.Lookup(regs[1].TaskID())
	assert.True(t, ok)
	assert.Same(t, regs[1], got)
	regs[1].Unregister(false)
	assert.Len(t, h.AllTasks(), 3)
	require.NoError(t, h.Shutdown(context.Background()))
}

func TestCompletedEventArgsCheckResult(t *testing.T) {
	err := errors.New("x")
	assert.Same(t, err, bgtask.CompletedEventArgs{Err: err}.CheckResult())
	assert.NoError(t, bgtask.CompletedEventArgs{}.CheckResult())
}

func TestDescriptions(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	defer func() { require.NoError(t, h.Shutdown(t.Context())) }()
	cond := bgtask.SystemCondition{Type: bgtask.SystemConditionInternetAvailable}
	sw := bgtask.NewCondition(true)
	reg, err := h.Register(bgtask.Builder{Name: "x", Task: nopTask,
		Trigger: &bgtask.TimeTrigger{FreshnessTime: 15 * time.Minute}, Conditions: []bgtask.Condition{cond, sw}})
	require.NoError(t, err)
	assert.Equal(t, "TimeTrigger every 15m0s", fmt.Sprint(reg.Trigger()))
	assert.Equal(t, []bgtask.Condition{cond, sw}, reg.Conditions())
	assert.Equal(t, "InternetAvailable", fmt.Sprint(cond))
	assert.Equal(t, "Switch (on)", fmt.Sprint(sw))
	sw.Set(false)
	assert.Equal(t, "Switch (off)", fmt.Sprint(sw))
	assert.Equal(t, "ApplicationTrigger once", fmt.Sprint(&bgtask.ApplicationTrigger{OneShot: true}))
	assert.Equal(t, "SystemTrigger InternetAvailable", fmt.Sprint(&bgtask.SystemTrigger{Type: bgtask.SystemTriggerInternetAvailable}))
	assert.Equal(t, "CustomTrigger", fmt.Sprint(&bgtask.CustomTrigger{}))
}

// Ensure may change a registration while it fires: each instance keeps the task and time
// limit it started with, and the change applies to the next one. Under -race this also
// checks that nothing reads them unguarded as the instance starts.
func TestEnsureAppliesToTheNextInstance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		trig := bgtask.NewApplicationTrigger()
		ran := make(chan string, 1)
		task := func(name string) bgtask.TaskFunc {
			return func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
				ran <- name
				<-ctx.Done()
				return nil
			}
		}
		b := bgtask.Builder{Name: "x", Task: task("first"), Trigger: trig, MaxExecutionTime: time.Minute}
		r, err := h.Ensure(b)
		require.NoError(t, err)
		res, err := trig.Request(context.Background(), nil)
		require.NoError(t, err)
		require.Equal(t, bgtask.Allowed, res)
		require.Equal(t, "first", <-ran)

		b.Task, b.MaxExecutionTime = task("second"), time.Hour
		_, err = h.Ensure(b)
		require.NoError(t, err)
		time.Sleep(time.Minute)
		synctest.Wait()
		last, ok := r.LastResult()
		require.True(t, ok)
		assert.Equal(t, bgtask.ExecutionTimeExceeded, last.Reason, "the running instance keeps its limit")

		_, err = trig.Request(context.Background(), nil)
		require.NoError(t, err)
		require.Equal(t, "second", <-ran)
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Len(t, h.Instances(), 1, "the next instance has the new limit")
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

// Ensure racing the start of instances: under -race, nothing reads what Ensure changes
// without the host's lock.
func TestEnsureRacingInstances(t *testing.T) {
	h := newHost(t)
	quick := bgtask.NewApplicationTrigger()
	q := bgtask.Builder{Name: "quick", Trigger: quick,
		Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })}
	_, err := h.Ensure(q)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for k := range 200 {
			q.MaxExecutionTime = time.Duration(k+1) * time.Hour
			_, _ = h.Ensure(q)
		}
	})
	for range 200 {
		_, _ = quick.Request(context.Background(), nil)
	}
	wg.Wait()
	require.NoError(t, h.Shutdown(context.Background()))
}

// An Ensure of a time-triggered registration keeps its countdown where it is when Ensure
// is done, not where it was when Ensure began: a slot that fired meanwhile (here, while
// Ensure writes the store) does not come due again, here or after a restart.
func TestEnsureKeepsACountdownThatMovedMeanwhile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*bgtask.Builder)
	}{
		{"changed", func(b *bgtask.Builder) { b.MaxExecutionTime = time.Hour }},
		{"same", func(*bgtask.Builder) {}},
	} {
		t.Run(tc.name, func(t *testing.T) { synctest.Test(t, func(t *testing.T) { ensureDuringAFire(t, tc.change) }) })
	}
}

func ensureDuringAFire(t *testing.T, change func(*bgtask.Builder)) {
	store := newMemStore()
	var mu sync.Mutex
	var slots []time.Time
	ran := make(chan struct{}, 10)
	task := bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
		mu.Lock()
		slots = append(slots, inst.TriggerDetails().(*bgtask.TimeTriggerDetails).ScheduledAt)
		mu.Unlock()
		ran <- struct{}{}
		return nil
	})
	runs := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(slots)
	}
	h := newHost(t, bgtask.WithLogger(nil), bgtask.WithStore(store), bgtask.WithEntryPoint("job", task))
	b := bgtask.Builder{Name: "x", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}}
	_, err := h.Ensure(b)
	require.NoError(t, err)
	time.Sleep(30 * time.Second)
	gate := make(chan struct{})
	store.mu.Lock()
	store.gate = gate
	store.mu.Unlock()
	change(&b)
	done := make(chan error)
	go func() { _, err := h.Ensure(b); done <- err }()
	<-ran // the 1:00 fire, while Ensure waits for the store
	synctest.Wait()
	store.mu.Lock()
	store.gate = nil
	store.mu.Unlock()
	close(gate)
	require.NoError(t, <-done)
	time.Sleep(10 * time.Second)
	synctest.Wait()
	require.NoError(t, h.Shutdown(context.Background()))
	assert.Equal(t, 1, runs(), "the 1:00 slot ran again: %v", slots)

	again := newHost(t, bgtask.WithLogger(nil), bgtask.WithStore(store), bgtask.WithEntryPoint("job", task))
	time.Sleep(10 * time.Second)
	synctest.Wait()
	assert.Equal(t, 1, runs(), "the store kept the countdown from before the 1:00 fire: %v", slots)
	require.NoError(t, again.Shutdown(context.Background()))
}

// TriggerString and OneShot tell the trigger as it was registered, although the program
// changed the trigger value since, for another registration, and changes it meanwhile.
func TestTriggerStringIsTheTriggerAsRegistered(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	trig := &bgtask.TimeTrigger{FreshnessTime: time.Hour}
	a := mustRegister(t, h, bgtask.Builder{Name: "a", Task: nopTask, Trigger: trig})
	trig.FreshnessTime, trig.OneShot = 2*time.Hour, true
	b := mustRegister(t, h, bgtask.Builder{Name: "b", Task: nopTask, Trigger: trig})
	done := make(chan struct{})
	go func() { // the program reuses its value: -race finds any read of it
		defer close(done)
		trig.FreshnessTime = 3 * time.Hour
	}()
	assert.Equal(t, "TimeTrigger every 1h0m0s", a.TriggerString())
	assert.False(t, a.OneShot())
	assert.Equal(t, "TimeTrigger every 2h0m0s once", b.TriggerString())
	assert.True(t, b.OneShot())
	<-done

	watch := func(ctx context.Context, _ func(any) bgtask.ApplicationTriggerResult) error { <-ctx.Done(); return nil }
	for k, trig := range []bgtask.Trigger{bgtask.NewApplicationTrigger(), &bgtask.SystemTrigger{Type: bgtask.SystemTriggerUserAway, OneShot: true},
		&bgtask.CustomTrigger{Watch: watch}} {
		r := mustRegister(t, h, bgtask.Builder{Name: fmt.Sprint(k), Task: nopTask, Trigger: trig})
		assert.Equal(t, fmt.Sprint(trig), r.TriggerString(), "as the trigger's String method says")
	}
	require.NoError(t, h.Shutdown(t.Context()))
}

// NextFire's time has no monotonic clock reading: two hosts on one store, one after the
// other, give times that are Equal when the countdown was kept.
func TestNextFireComparesByTheWallClock(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	r := mustRegister(t, h, bgtask.Builder{Name: "n", Task: nopTask, Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}})
	next, ok := r.NextFire()
	require.True(t, ok)
	assert.NotContains(t, next.String(), "m=", "no monotonic reading")
	require.NoError(t, h.Shutdown(t.Context()))
}

// Ensure binds its Builder's trigger in place of the one the registration had: the old
// one's Request no longer fires it.
func TestEnsureRebindsTheTrigger(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	first, second := bgtask.NewApplicationTrigger(), bgtask.NewApplicationTrigger()
	b := bgtask.Builder{Name: "n", Task: nopTask, Trigger: first}
	_, err := h.Ensure(b)
	require.NoError(t, err)
	b.Trigger = second
	_, err = h.Ensure(b)
	require.NoError(t, err)
	res, err := first.Request(t.Context(), nil)
	require.NoError(t, err)
	assert.Equal(t, bgtask.DisabledByPolicy, res)
	_, res, err = second.RequestAndWait(t.Context(), nil)
	require.NoError(t, err)
	assert.Equal(t, bgtask.Allowed, res)
	require.NoError(t, h.Shutdown(t.Context()))
}

package bgtask_test

import (
	"context"
	"log/slog"
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
	"go.uber.org/goleak"

	"github.com/bgtask-go/bgtask"
)

// eventLog keeps the events a subscriber received.
type eventLog struct {
	mu     sync.Mutex
	events []bgtask.Event
}

func (r *eventLog) add(e bgtask.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// kinds returns the kinds received, in order; for the events of one instance when id is
// not uuid.Nil.
func (r *eventLog) kinds(id uuid.UUID) []bgtask.EventKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ks []bgtask.EventKind
	for _, e := range r.events {
		if id == uuid.Nil || e.InstanceID == id {
			ks = append(ks, e.Kind)
		}
	}
	return ks
}

func (r *eventLog) last(k bgtask.EventKind) (bgtask.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for j := len(r.events) - 1; j >= 0; j-- {
		if r.events[j].Kind == k {
			return r.events[j], true
		}
	}
	return bgtask.Event{}, false
}

func TestEventsOfOneInstanceInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil))
		var rec eventLog
		h.Subscribe(rec.add)
		trig := bgtask.NewApplicationTrigger()
		reg, err := h.Register(bgtask.Builder{Name: "x", Trigger: trig, Task: bgtask.TaskFunc(
			func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
				<-ctx.Done()
				return ctx.Err()
			})})
		require.NoError(t, err)
		_, err = trig.Request(t.Context(), nil)
		require.NoError(t, err)
		synctest.Wait()
		id := h.Instances()[0].InstanceID
		require.True(t, h.CancelInstance(id, bgtask.IdleTask))
		synctest.Wait() // the instance ends
		reg.Unregister(false)
		require.NoError(t, h.Shutdown(t.Context()))

		assert.Equal(t, []bgtask.EventKind{bgtask.EventRegistered, bgtask.EventLaunched,
			bgtask.EventCanceled, bgtask.EventCompleted, bgtask.EventUnregistered}, rec.kinds(uuid.Nil))
		c, ok := rec.last(bgtask.EventCompleted)
		require.True(t, ok)
		assert.Equal(t, reg, c.Task)
		assert.Equal(t, id, c.InstanceID)
		assert.True(t, c.Result.Canceled)
		assert.Equal(t, bgtask.IdleTask, c.Result.Reason)
		assert.Equal(t, bgtask.IdleTask, c.Reason)
		assert.False(t, c.Time.IsZero())
	})
}

func TestEventsSayWhatHoldsAFire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil), bgtask.WithPolicy(bgtask.Policy{MaxConcurrent: 1}))
		var rec eventLog
		h.Subscribe(rec.add, bgtask.EventHeld, bgtask.EventCompleted)
		cond := bgtask.NewCondition(false)
		release := make(chan struct{})
		block := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { <-release; return nil })
		a, b := bgtask.SystemTriggerUserPresent, bgtask.SystemTriggerInternetAvailable
		_, err := h.Register(bgtask.Builder{Name: "a", Trigger: &bgtask.SystemTrigger{Type: a}, Task: block})
		require.NoError(t, err)
		_, err = h.Register(bgtask.Builder{Name: "b", Trigger: &bgtask.SystemTrigger{Type: b}, Task: block, Conditions: []bgtask.Condition{cond}})
		require.NoError(t, err)

		h.Signal(a)
		synctest.Wait()
		h.Signal(a) // a runs
		h.Signal(b) // the condition does not hold
		synctest.Wait()
		cond.Set(true) // now the slot is taken
		synctest.Wait()
		close(release)
		synctest.Wait()
		require.NoError(t, h.Shutdown(t.Context()))

		var held []string
		rec.mu.Lock()
		for _, e := range rec.events {
			if e.Kind == bgtask.EventHeld {
				held = append(held, e.Task.Name()+" "+e.Held.String())
			}
		}
		rec.mu.Unlock()
		assert.Equal(t, []string{"a running", "b conditions", "b concurrency", "a concurrency"}, held,
			"when a ends, b takes the slot, oldest first, and a's next fire waits for it")
	})
}

func TestEventsOfADroppedFire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := new(syncBuffer)
		h := newHost(t, bgtask.WithLogger(slogTo(log)))
		var rec eventLog
		h.Subscribe(rec.add, bgtask.EventCompleted)
		reg, err := h.Register(bgtask.Builder{Name: "x", Trigger: &bgtask.SystemTrigger{Type: bgtask.SystemTriggerUserPresent},
			Task: nopTask, Conditions: []bgtask.Condition{bgtask.NewCondition(false)}})
		require.NoError(t, err)
		h.Signal(bgtask.SystemTriggerUserPresent)
		reg.Unregister(false)
		require.NoError(t, h.Shutdown(t.Context()))
		c, ok := rec.last(bgtask.EventCompleted)
		require.True(t, ok)
		assert.True(t, c.Result.Started.IsZero())
		assert.Equal(t, bgtask.Abort, c.Result.Reason)
		assert.Contains(t, log.String(), "fire dropped", "a dropped fire is a problem: logged at Warn")
	})
}

func TestEventsOfATermination(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil), bgtask.WithDeferralSites(true),
			bgtask.WithPolicy(bgtask.Policy{GracePeriod: time.Second}))
		var rec eventLog
		h.Subscribe(rec.add, bgtask.EventTerminated, bgtask.EventCompleted)
		trig := bgtask.NewApplicationTrigger()
		_, err := h.Register(bgtask.Builder{Name: "x", Trigger: trig, Task: bgtask.TaskFunc(
			func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
				inst.GetDeferral() // never completed
				return nil
			})})
		require.NoError(t, err)
		_, err = trig.Request(t.Context(), nil)
		require.NoError(t, err)
		synctest.Wait()
		require.ErrorIs(t, h.Shutdown(t.Context()), bgtask.ErrTerminated)
		require.Equal(t, []bgtask.EventKind{bgtask.EventTerminated, bgtask.EventCompleted}, rec.kinds(uuid.Nil))
		e, _ := rec.last(bgtask.EventTerminated)
		var te *bgtask.TerminatedError
		require.ErrorAs(t, e.Result.Err, &te)
		require.Len(t, te.Outstanding, 1)
		assert.Contains(t, te.Outstanding[0].Site, "stream_test.go:")
	})
}

func TestEventsOfSuspensionAndPanics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil))
		var rec eventLog
		h.Subscribe(rec.add, bgtask.EventSuspended, bgtask.EventResumed, bgtask.EventPanic)
		h.Suspend()
		h.Suspend() // no change: no event
		h.Resume()
		trig := bgtask.NewApplicationTrigger()
		_, err := h.Register(bgtask.Builder{Name: "x", Trigger: trig, Task: bgtask.TaskFunc(
			func(context.Context, bgtask.BackgroundTaskInstance) error { panic("boom") })})
		require.NoError(t, err)
		_, _, err = trig.RequestAndWait(t.Context(), nil)
		require.NoError(t, err)
		require.NoError(t, h.Shutdown(t.Context()))
		assert.Equal(t, []bgtask.EventKind{bgtask.EventSuspended, bgtask.EventResumed, bgtask.EventPanic}, rec.kinds(uuid.Nil))
		p, _ := rec.last(bgtask.EventPanic)
		assert.Equal(t, "Run", p.Where)
		var pe *bgtask.PanicError
		assert.ErrorAs(t, p.Err, &pe)
		assert.NotEqual(t, uuid.Nil, p.InstanceID)
	})
}

// A subscriber that blocks delays only its own events: tasks, the host and the other
// subscribers go on.
func TestSubscriberNeverBlocksTheHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil))
		unblock := make(chan struct{})
		h.Subscribe(func(bgtask.Event) { <-unblock })
		var rec eventLog
		h.Subscribe(rec.add, bgtask.EventCompleted)
		trig := bgtask.NewApplicationTrigger()
		_, err := h.Register(bgtask.Builder{Name: "x", Trigger: trig, Task: nopTask})
		require.NoError(t, err)
		for range 3 {
			_, res, err := trig.RequestAndWait(t.Context(), nil)
			require.NoError(t, err)
			require.Equal(t, bgtask.Allowed, res)
		}
		synctest.Wait()
		assert.Len(t, rec.kinds(uuid.Nil), 3)

		// Shutdown waits for the queued events: a subscriber stuck for good is named.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		err = h.Shutdown(ctx)
		var se *bgtask.ShutdownError
		require.ErrorAs(t, err, &se)
		assert.Contains(t, se.Stuck, "Subscribe func")
		close(unblock)
		require.NoError(t, h.Shutdown(t.Context()))
	})
}

// A subscriber that falls far behind misses events, and is told how many.
func TestSubscriberThatFallsBehindIsToldWhatItMissed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil))
		unblock := make(chan struct{})
		var rec eventLog
		first := true
		h.Subscribe(func(e bgtask.Event) {
			if first {
				first = false
				<-unblock
			}
			rec.add(e)
		})
		h.Suspend()
		synctest.Wait() // the subscriber holds the first event
		h.Resume()
		for range 1<<15 + 5 { // with the Resume above, 65,547 events: 11 are dropped
			h.Suspend()
			h.Resume()
		}
		close(unblock)
		synctest.Wait()
		h.Suspend()
		require.NoError(t, h.Shutdown(t.Context()))
		rec.mu.Lock()
		defer rec.mu.Unlock()
		require.Equal(t, 1+1<<16+1, len(rec.events), "the first event, the queue, the next")
		assert.Equal(t, uint64(11), rec.events[len(rec.events)-2].Missed, "the last queued says what followed it")
		assert.Zero(t, rec.events[len(rec.events)-1].Missed)
		assert.Zero(t, rec.events[len(rec.events)-3].Missed)
	})
}

func TestSubscriberPanicIsLoggedAndDeliveryGoesOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := new(syncBuffer)
		h := newHost(t, bgtask.WithLogger(slogTo(log)))
		var rec eventLog
		h.Subscribe(func(e bgtask.Event) {
			rec.add(e)
			panic("subscriber exploded")
		})
		h.Suspend()
		h.Resume()
		require.NoError(t, h.Shutdown(t.Context()))
		assert.Equal(t, []bgtask.EventKind{bgtask.EventSuspended, bgtask.EventResumed}, rec.kinds(uuid.Nil),
			"its own panic is not sent back to it")
		assert.Contains(t, log.String(), "subscriber exploded")
		assert.Contains(t, log.String(), "panic in Subscribe func recovered")
	})
}

func TestSubscriberStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil))
		var rec eventLog
		stop := h.Subscribe(rec.add)
		h.Suspend()
		synctest.Wait()
		stop()
		stop() // twice: nothing more
		h.Resume()
		require.NoError(t, h.Shutdown(t.Context()))
		assert.Equal(t, []bgtask.EventKind{bgtask.EventSuspended}, rec.kinds(uuid.Nil))
		h.Subscribe(nil)() // a nil f does nothing
	})
}

func TestSubscriberRunsGoexit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil))
		var rec eventLog
		h.Subscribe(func(e bgtask.Event) {
			rec.add(e)
			if e.Kind == bgtask.EventSuspended {
				runtime.Goexit()
			}
		})
		h.Suspend()
		h.Resume()
		require.NoError(t, h.Shutdown(t.Context()))
		assert.Equal(t, []bgtask.EventKind{bgtask.EventSuspended, bgtask.EventResumed}, rec.kinds(uuid.Nil))
	})
}

// The log reads the stream: lifecycle at Debug, problems at Warn or Error, each record with
// the task's name and the instance's id.
func TestLogLevels(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		t.Run(level.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				log := new(syncBuffer)
				h := newHost(t, bgtask.WithLogger(slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: level}))))
				trig := bgtask.NewApplicationTrigger()
				_, err := h.Register(bgtask.Builder{Name: "job", Trigger: trig, Task: bgtask.TaskFunc(
					func(context.Context, bgtask.BackgroundTaskInstance) error { panic("boom") })})
				require.NoError(t, err)
				out, _, err := trig.RequestAndWait(t.Context(), nil)
				require.NoError(t, err)
				require.NoError(t, h.Shutdown(t.Context()))
				text := log.String()
				assert.Contains(t, text, "level=ERROR msg=\"bgtask: panic in Run recovered\" task=job instance="+out.InstanceID.String())
				assert.Equal(t, level == slog.LevelDebug, strings.Contains(text, "instance launched"), text)
				assert.Equal(t, level == slog.LevelDebug, strings.Contains(text, "msg=\"bgtask: instance completed\" task=job instance="+out.InstanceID.String()), text)
			})
		})
	}
}

// An Ensure that changes a registration in place reports it; one that changes nothing
// reports nothing.
func TestEventsOfEnsure(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	var rec eventLog
	h.Subscribe(rec.add, bgtask.EventRegistered, bgtask.EventUpdated, bgtask.EventUnregistered)
	b := bgtask.Builder{Name: "n", Task: nopTask, Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}}
	reg, err := h.Ensure(b)
	require.NoError(t, err)
	_, err = h.Ensure(b) // the same
	require.NoError(t, err)
	b.Trigger = &bgtask.TimeTrigger{FreshnessTime: 2 * time.Hour}
	_, err = h.Ensure(b)
	require.NoError(t, err)
	require.NoError(t, h.Shutdown(t.Context()))
	assert.Equal(t, []bgtask.EventKind{bgtask.EventRegistered, bgtask.EventUpdated}, rec.kinds(uuid.Nil))
	e, _ := rec.last(bgtask.EventUpdated)
	assert.Equal(t, reg, e.Task)
	assert.Equal(t, "Updated", bgtask.EventUpdated.String())
}

func TestEventKindNames(t *testing.T) {
	assert.Equal(t, "Completed", bgtask.EventCompleted.String())
	assert.Equal(t, "EventKind(99)", bgtask.EventKind(99).String())
	assert.Equal(t, "conditions", bgtask.HeldByConditions.String())
	assert.Equal(t, "HeldBy(9)", bgtask.HeldBy(9).String())
}

// perInstance records the kinds of the events of each instance.
type perInstance struct {
	mu  sync.Mutex
	per map[uuid.UUID][]bgtask.EventKind
}

func (r *perInstance) add(e bgtask.Event) {
	if e.InstanceID == uuid.Nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.per == nil {
		r.per = make(map[uuid.UUID][]bgtask.EventKind)
	}
	r.per[e.InstanceID] = append(r.per[e.InstanceID], e.Kind)
}

// outOfOrder returns the instances whose events were not Launched, then Canceled, then
// Terminated, then Completed (each at most once).
func (r *perInstance) outOfOrder() map[uuid.UUID][]bgtask.EventKind {
	rank := map[bgtask.EventKind]int{bgtask.EventLaunched: 1, bgtask.EventCanceled: 2, bgtask.EventTerminated: 3, bgtask.EventCompleted: 4}
	r.mu.Lock()
	defer r.mu.Unlock()
	bad := make(map[uuid.UUID][]bgtask.EventKind)
	for id, ks := range r.per {
		last := 0
		for _, k := range ks {
			if rank[k] <= last {
				bad[id] = ks
			}
			last = rank[k]
		}
	}
	return bad
}

// The events of an instance come in the order of what they report, even when a cancel
// races with the instance's start or end: each is sent under the lock that orders it.
func TestEventsOfAnInstanceInOrderUnderRaces(t *testing.T) {
	for _, grace := range []time.Duration{0, time.Microsecond} {
		h := newHost(t, bgtask.WithLogger(nil), bgtask.WithPolicy(bgtask.Policy{GracePeriod: grace}))
		var rec perInstance
		h.Subscribe(rec.add)
		trig := bgtask.NewApplicationTrigger()
		release := make(chan struct{})
		reg := mustRegister(t, h, bgtask.Builder{Name: "x", Trigger: trig, Task: bgtask.TaskFunc(
			func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
				if grace > 0 {
					<-release // outlives its grace period: terminated
				} else {
					<-ctx.Done()
				}
				return nil
			})})
		done := make(chan struct{}, 1)
		reg.OnCompleted(func(bgtask.CompletedEventArgs) { done <- struct{}{} })
		quit := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-quit:
					return
				default:
					h.Cancel(bgtask.Abort)
				}
			}
		})
		for range 300 {
			_, err := trig.Request(t.Context(), nil)
			require.NoError(t, err)
			<-done
		}
		close(quit)
		wg.Wait()
		close(release)
		_ = h.Shutdown(t.Context())
		for id, ks := range rec.outOfOrder() {
			t.Errorf("grace %v: instance %s: %v", grace, id, ks)
		}
	}
}

// The stream reports instances in the order they ran: an instance's Completed comes
// before the Launched of an instance its end let start, whether that waited for the
// registration (a held fire) or for a MaxConcurrent slot. So a program that counts the
// running instances from the stream never counts more than ran at once.
func TestEventsOfInstancesComeInTheOrderTheyRan(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil), bgtask.WithPolicy(bgtask.Policy{MaxConcurrent: 1}))
	var rec eventLog
	h.Subscribe(rec.add, bgtask.EventLaunched, bgtask.EventCompleted)
	tokens := make(chan struct{}, 3)
	completed := make(chan struct{}, 3)
	task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error {
		<-tokens
		return nil
	})
	a, b := bgtask.SystemTriggerUserPresent, bgtask.SystemTriggerInternetAvailable
	for _, typ := range []bgtask.SystemTriggerType{a, b} {
		reg := mustRegister(t, h, bgtask.Builder{Name: typ.String(), Trigger: &bgtask.SystemTrigger{Type: typ}, Task: task})
		reg.OnCompleted(func(bgtask.CompletedEventArgs) { completed <- struct{}{} })
	}
	for range 100 {
		h.Signal(a) // runs
		h.Signal(a) // held: a runs
		h.Signal(b) // held: the one slot is taken
		for range 3 {
			tokens <- struct{}{}
		}
		for range 3 {
			<-completed
		}
	}
	require.NoError(t, h.Shutdown(t.Context()))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.events, 600)
	running := 0
	for k, e := range rec.events {
		if e.Kind == bgtask.EventLaunched {
			running++
		} else {
			running--
		}
		require.Contains(t, []int{0, 1}, running, "after event %d, %s of %s, the stream counts %d running", k, e.Kind, e.Task.Name(), running)
	}
}

// Suspended and Resumed alternate, as the host's state does, under concurrent calls.
func TestSuspendedAndResumedAlternate(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	var mu sync.Mutex
	var kinds []bgtask.EventKind
	h.Subscribe(func(e bgtask.Event) {
		mu.Lock()
		kinds = append(kinds, e.Kind)
		mu.Unlock()
	}, bgtask.EventSuspended, bgtask.EventResumed)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for range 2000 {
				h.Suspend()
				h.Resume()
			}
		})
	}
	wg.Wait()
	require.NoError(t, h.Shutdown(t.Context()))
	for k := 1; k < len(kinds); k++ {
		require.NotEqual(t, kinds[k-1], kinds[k], "event %d", k)
	}
}

// A log that records only errors still gets the panics.
func TestErrorOnlyLogGetsPanics(t *testing.T) {
	log := new(syncBuffer)
	h := newHost(t, bgtask.WithLogger(slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelError}))))
	trig := bgtask.NewApplicationTrigger()
	mustRegister(t, h, bgtask.Builder{Name: "p", Trigger: trig, Task: bgtask.TaskFunc(
		func(context.Context, bgtask.BackgroundTaskInstance) error { panic("boom") })})
	_, _, err := trig.RequestAndWait(t.Context(), nil)
	require.NoError(t, err)
	require.NoError(t, h.Shutdown(t.Context()))
	assert.Contains(t, log.String(), "panic in Run recovered")
}

// After Shutdown returned, subscribers get nothing more, and no goroutine is started for
// them; a kind that is not one subscribes to nothing.
func TestNoEventsAfterShutdown(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	var rec eventLog
	h.Subscribe(func(e bgtask.Event) { rec.add(e) })
	var none eventLog
	h.Subscribe(none.add, 0, bgtask.EventKind(200))
	reg := mustRegister(t, h, bgtask.Builder{Name: "x", Trigger: bgtask.NewApplicationTrigger(), Task: nopTask})
	require.NoError(t, h.Shutdown(t.Context()))
	reg.Unregister(false)
	assert.Equal(t, []bgtask.EventKind{bgtask.EventRegistered}, rec.kinds(uuid.Nil))
	assert.Empty(t, none.kinds(uuid.Nil))
}

// An Unregister racing with the end of Shutdown may send its event after Shutdown has
// waited for the deliveries: it is not delivered once Shutdown has returned.
func TestNoEventsAfterShutdownUnderRaces(t *testing.T) {
	var late atomic.Int64
	for range 2000 {
		h := newHost(t, bgtask.WithLogger(nil))
		var returned atomic.Bool
		h.Subscribe(func(bgtask.Event) {
			if returned.Load() {
				late.Add(1)
			}
		})
		var regs []*bgtask.Registration
		for range 4 {
			regs = append(regs, mustRegister(t, h, bgtask.Builder{Name: "x", Trigger: bgtask.NewApplicationTrigger(), Task: nopTask}))
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for _, r := range regs {
				r.Unregister(false)
			}
		}()
		require.NoError(t, h.Shutdown(t.Context()))
		returned.Store(true)
		<-done
	}
	require.NoError(t, goleak.Find(), "the deliveries started late have all returned")
	assert.Zero(t, late.Load(), "events delivered after Shutdown returned")
}

// An instance canceled and terminated before its goroutine called Run completes with a
// zero Started, as documented, but it was launched: the log records it as completed, not
// as a dropped fire.
func TestTerminatedBeforeRunIsNotLoggedAsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		launched := make(chan struct{})
		release := make(chan struct{})
		log := &gateHandler{at: "bgtask: instance launched", entered: launched, release: release}
		h := newHost(t, bgtask.WithLogger(slog.New(log)), bgtask.WithPolicy(bgtask.Policy{GracePeriod: time.Second}))
		trig := bgtask.NewApplicationTrigger()
		mustRegister(t, h, bgtask.Builder{Name: "x", Trigger: trig, Task: nopTask})
		go func() { _, _ = trig.Request(context.Background(), nil) }() // held in the log, before the launch
		<-launched
		require.Len(t, h.Instances(), 1)
		require.True(t, h.CancelInstance(h.Instances()[0].InstanceID, bgtask.Abort))
		time.Sleep(2 * time.Second) // past the grace period: terminated before its goroutine started
		synctest.Wait()
		close(release)
		synctest.Wait() // its goroutine found it terminated, and returned without calling Run
		require.NoError(t, h.Shutdown(t.Context()))
		assert.Contains(t, log.text(), "bgtask: instance terminated")
		assert.NotContains(t, log.text(), "fire dropped")
		assert.Contains(t, log.text(), "bgtask: instance completed")
	})
}

// gateHandler is a log that holds the record whose message is at until release is
// closed, signaling entered when it starts holding it, and keeps every message.
type gateHandler struct {
	at      string
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	msgs    []string
}

func (g *gateHandler) Enabled(context.Context, slog.Level) bool { return true }
func (g *gateHandler) WithAttrs([]slog.Attr) slog.Handler       { return g }
func (g *gateHandler) WithGroup(string) slog.Handler            { return g }
func (g *gateHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == g.at {
		close(g.entered)
		<-g.release
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.msgs = append(g.msgs, r.Message)
	return nil
}

func (g *gateHandler) text() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Join(g.msgs, "\n")
}

package bgtask

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Lateness of a burst: 10,000 time triggers due at one instant, from ScheduledAt to Run,
// beside 10,000 runtime timers due at one instant, from their due time to their func. The
// triggers are registered first and then all set due at the same instant, which the public
// API cannot do (each is due FreshnessTime after its own Register), hence an internal test.

const lateBurst = 10_000

func BenchmarkTimeTriggersDueAtOneInstant(b *testing.B) {
	warmUp(2 * lateBurst)
	h, _ := NewHost(WithLogger(nil))
	var late lateness
	var all sync.WaitGroup
	task := TaskFunc(func(ctx context.Context, inst BackgroundTaskInstance) error {
		late.add(time.Since(inst.TriggerDetails().(*TimeTriggerDetails).ScheduledAt))
		all.Done()
		return nil
	})
	trig := &TimeTrigger{FreshnessTime: time.Hour}
	for range lateBurst {
		_, _ = h.Register(Builder{Name: "due", Task: task, Trigger: trig})
	}
	for b.Loop() {
		all.Add(lateBurst)
		h.lock()
		due := h.now() + int64(100*time.Millisecond)
		for _, r := range h.sched.due {
			r.sched.next = due
		}
		h.unlock()
		h.sched.wake <- struct{}{} // the earliest time changed (all equal: the heap holds)
		all.Wait()
		late.next()
		for scheduled := 0; scheduled < lateBurst; time.Sleep(time.Millisecond) {
			h.lock() // wait until every instance is retired and its trigger back in the heap
			scheduled = len(h.sched.due)
			h.unlock()
		}
	}
	_ = h.Shutdown(context.Background())
	late.report(b)
}

func BenchmarkTimeTriggersDueAtOneInstantBaselineTimers(b *testing.B) {
	warmUp(2 * lateBurst)
	var late lateness
	var all sync.WaitGroup
	for b.Loop() {
		all.Add(lateBurst)
		due := time.Now().Add(100 * time.Millisecond)
		for range lateBurst {
			time.AfterFunc(time.Until(due), func() {
				late.add(time.Since(due))
				all.Done()
			})
		}
		all.Wait()
		late.next()
	}
	late.report(b)
}

// lateness collects how late each func of a burst ran, without a lock, which would make
// a convoy of its own, and the p50 and p99 of each burst.
type lateness struct {
	n        atomic.Int64
	late     [lateBurst]time.Duration
	p50, p99 []time.Duration
}

func (l *lateness) add(d time.Duration) {
	if k := l.n.Add(1) - 1; k < lateBurst {
		l.late[k] = d
	}
}

// next ends a burst.
func (l *lateness) next() {
	late := l.late[:min(l.n.Load(), lateBurst)]
	slices.Sort(late)
	l.p50 = append(l.p50, late[len(late)/2])
	l.p99 = append(l.p99, late[len(late)*99/100])
	l.n.Store(0)
}

// report gives the median over the bursts of their p50 and p99.
func (l *lateness) report(b *testing.B) {
	slices.Sort(l.p50)
	slices.Sort(l.p99)
	b.ReportMetric(float64(l.p50[len(l.p50)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(l.p99[len(l.p99)/2].Microseconds())/1000, "p99-ms")
}

// warmUp runs and ends n goroutines, so that the runtime keeps their descriptors for reuse:
// the benchmarks then measure what an instance costs beyond its goroutine, for ours and for
// the baseline alike.
func warmUp(n int) {
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for range n {
		wg.Go(func() { <-gate })
	}
	close(gate)
	wg.Wait()
}

// Instance IDs: the host's pool of random bytes beside uuid.New, which reads the system's
// random source for each ID.

func BenchmarkInstanceID(b *testing.B) {
	var p idPool
	for b.Loop() {
		_ = p.newID()
	}
}

func BenchmarkInstanceIDBaselineUUIDNew(b *testing.B) {
	for b.Loop() {
		_ = uuid.New()
	}
}

// BenchmarkRegistrationsLockHold measures how long AllTasks holds the host's lock with
// 10,000 registrations (it sorts them after): how long a launch may wait for a look at
// the host, such as bgtaskhttp's /api/state.
func BenchmarkRegistrationsLockHold(b *testing.B) {
	h, _ := NewHost(WithLogger(nil))
	trig := NewApplicationTrigger()
	for k := range 10_000 {
		_, _ = h.Register(Builder{Name: "r" + strconv.Itoa(k), Trigger: trig, Task: TaskFunc(func(context.Context, BackgroundTaskInstance) error { return nil })})
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = h.registrations()
	}
	_ = h.Shutdown(context.Background())
}

package bgtask_test

import (
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bgtask-go/bgtask"
)

// parked starts one instance that waits until the benchmark ends and returns it.
func parked(b *testing.B, opts ...bgtask.Option) (bgtask.BackgroundTaskInstance, *bgtask.Registration) {
	b.Helper()
	h, err := bgtask.NewHost(append([]bgtask.Option{bgtask.WithLogger(nil)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	insts := make(chan bgtask.BackgroundTaskInstance, 1)
	release := make(chan struct{})
	trig := bgtask.NewApplicationTrigger()
	reg, err := h.Register(bgtask.Builder{Name: "bench", Trigger: trig, Task: started(insts,
		func(context.Context, bgtask.BackgroundTaskInstance) error { <-release; return nil })})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := trig.Request(context.Background(), nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		close(release)
		if err := h.Shutdown(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return <-insts, reg
}

// Deferrals: GetDeferral+Complete beside sync.WaitGroup Add+Done.

func BenchmarkDeferral(b *testing.B) {
	inst, _ := parked(b)
	b.ReportAllocs()
	for b.Loop() {
		inst.GetDeferral().Complete()
	}
}

// BenchmarkDeferralSites is BenchmarkDeferral with WithDeferralSites(true): each deferral
// records where and when it was taken.
func BenchmarkDeferralSites(b *testing.B) {
	inst, _ := parked(b, bgtask.WithDeferralSites(true))
	b.ReportAllocs()
	for b.Loop() {
		inst.GetDeferral().Complete()
	}
}

func BenchmarkDeferralBaselineWaitGroup(b *testing.B) {
	var wg sync.WaitGroup
	b.ReportAllocs()
	for b.Loop() {
		wg.Add(1)
		wg.Done()
	}
}

// Progress: SetProgress beside an atomic store.

func BenchmarkSetProgressUnwatched(b *testing.B) {
	inst, _ := parked(b)
	b.ReportAllocs()
	p := uint32(0)
	for b.Loop() {
		p++
		inst.SetProgress(p)
	}
}

func BenchmarkSetProgressWatched(b *testing.B) {
	inst, reg := parked(b)
	var seen atomic.Uint32
	reg.OnProgress(func(e bgtask.ProgressEventArgs) { seen.Store(e.Progress) })
	b.ReportAllocs()
	p := uint32(0)
	for b.Loop() {
		p++
		inst.SetProgress(p)
	}
}

func BenchmarkSetProgressBaselineAtomicStore(b *testing.B) {
	var v atomic.Uint32
	b.ReportAllocs()
	p := uint32(0)
	for b.Loop() {
		p++
		v.Store(p)
	}
}

// One instance end to end: Request → Run → Completed handler, beside the floor of what an
// instance needs: a goroutine, a cancelable context, a UUID and a WaitGroup.

func BenchmarkInstanceEndToEnd(b *testing.B) {
	endToEnd(b, bgtask.NewHost)
}

// BenchmarkInstanceEndToEndSubscribed is BenchmarkInstanceEndToEnd with a subscriber to the
// completions, as bgtaskhttp has (a metrics program too): what the event stream costs when
// it is read. BenchmarkInstanceEndToEndSubscribedToAll subscribes to every event.
func BenchmarkInstanceEndToEndSubscribed(b *testing.B) {
	endToEnd(b, func(opts ...bgtask.Option) (*bgtask.Host, error) {
		h, err := bgtask.NewHost(opts...)
		var n atomic.Int64
		h.Subscribe(func(bgtask.Event) { n.Add(1) }, bgtask.EventCompleted)
		return h, err
	})
}

func BenchmarkInstanceEndToEndSubscribedToAll(b *testing.B) {
	endToEnd(b, func(opts ...bgtask.Option) (*bgtask.Host, error) {
		h, err := bgtask.NewHost(opts...)
		var n atomic.Int64
		h.Subscribe(func(bgtask.Event) { n.Add(1) })
		return h, err
	})
}

// BenchmarkInstanceEndToEndDefaultLog is BenchmarkInstanceEndToEnd with the log a program
// gets when it passes none: problems only, on slog.Default.
func BenchmarkInstanceEndToEndDefaultLog(b *testing.B) {
	endToEnd(b, func(opts ...bgtask.Option) (*bgtask.Host, error) {
		return bgtask.NewHost(append(opts, bgtask.WithLogger(slog.Default()))...)
	})
}

// BenchmarkInstanceEndToEndBesideHeldFires is BenchmarkInstanceEndToEnd with 10,000 fires
// of other registrations held by a condition that does not hold: an instance's end must
// not walk them.
func BenchmarkInstanceEndToEndBesideHeldFires(b *testing.B) {
	endToEnd(b, func(opts ...bgtask.Option) (*bgtask.Host, error) {
		h, err := bgtask.NewHost(opts...)
		never := bgtask.NewCondition(false)
		for range burst {
			trig := bgtask.NewApplicationTrigger()
			_, _ = h.Register(bgtask.Builder{Name: "held", Trigger: trig, Task: nopTask, Conditions: []bgtask.Condition{never}})
			_, _ = trig.Request(context.Background(), nil)
		}
		return h, err
	})
}

// endToEnd runs one instance at a time, from Request to its Completed handler, on a host
// made by newHost.
func endToEnd(b *testing.B, newHost func(...bgtask.Option) (*bgtask.Host, error)) {
	h, _ := newHost(bgtask.WithLogger(nil))
	trig := bgtask.NewApplicationTrigger()
	reg, _ := h.Register(bgtask.Builder{Name: "e2e", Trigger: trig, Task: nopTask})
	done := make(chan struct{}, 1)
	reg.OnCompleted(func(bgtask.CompletedEventArgs) { done <- struct{}{} })
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if res, err := trig.Request(ctx, nil); res != bgtask.Allowed || err != nil {
			b.Fatal(res, err)
		}
		<-done
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "instances/s")
	if err := h.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkInstanceEndToEndBaselineFloor(b *testing.B) {
	var wg sync.WaitGroup
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithCancelCause(context.Background())
		id := uuid.New()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = ctx, id
		}()
		wg.Wait()
		cancel(nil)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "instances/s")
}

// Scale: 100,000 instances parked on their context, then canceled, beside 100,000 bare
// goroutines each waiting on a child of one context.

const fleet = 100_000

type fleetHost struct {
	host      *bgtask.Host
	trigs     []*bgtask.ApplicationTrigger
	running   sync.WaitGroup
	completed sync.WaitGroup
}

func newFleet(b *testing.B) *fleetHost {
	f := &fleetHost{}
	f.host, _ = bgtask.NewHost(bgtask.WithLogger(slog.New(slog.DiscardHandler)))
	task := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		f.running.Done()
		<-ctx.Done()
		return nil
	})
	for range fleet {
		trig := bgtask.NewApplicationTrigger()
		reg, err := f.host.Register(bgtask.Builder{Name: "fleet", Trigger: trig, Task: task})
		if err != nil {
			b.Fatal(err)
		}
		reg.OnCompleted(func(bgtask.CompletedEventArgs) { f.completed.Done() })
		f.trigs = append(f.trigs, trig)
	}
	return f
}

func (f *fleetHost) start(b *testing.B) {
	f.running.Add(fleet)
	f.completed.Add(fleet)
	for _, t := range f.trigs {
		if _, err := t.Request(context.Background(), nil); err != nil {
			b.Fatal(err)
		}
	}
	f.running.Wait()
}

func heapNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func BenchmarkHeapPerRunningInstance(b *testing.B) {
	bgtask.WarmUp(fleet)
	measured := false
	for b.Loop() {
		before := heapNow()
		f := newFleet(b)
		registered := heapNow()
		f.start(b)
		running := heapNow()
		if !measured {
			measured = true
			b.ReportMetric(float64(registered-before)/fleet, "B/registration")
			b.ReportMetric(float64(running-registered)/fleet, "B/instance")
		}
		f.host.Cancel(bgtask.Abort)
		f.completed.Wait()
		_ = f.host.Shutdown(context.Background())
	}
}

func BenchmarkHeapPerRunningInstanceBaselineGoroutine(b *testing.B) {
	bgtask.WarmUp(fleet)
	measured := false
	for b.Loop() {
		before := heapNow()
		parent, cancel := context.WithCancel(context.Background())
		var running, done sync.WaitGroup
		running.Add(fleet)
		done.Add(fleet)
		for range fleet {
			ctx, cancelChild := context.WithCancelCause(parent)
			go func() {
				defer done.Done()
				defer cancelChild(nil)
				running.Done()
				<-ctx.Done()
			}()
		}
		running.Wait()
		if !measured {
			measured = true
			b.ReportMetric(float64(heapNow()-before)/fleet, "B/instance")
		}
		cancel()
		done.Wait()
	}
}

func BenchmarkCancelFleet(b *testing.B) { cancelFleet(b, newFleet(b)) }

// BenchmarkCancelFleetSubscribed is BenchmarkCancelFleet with a subscriber to the
// completions, as bgtaskhttp has.
func BenchmarkCancelFleetSubscribed(b *testing.B) {
	f := newFleet(b)
	var n atomic.Int64
	f.host.Subscribe(func(bgtask.Event) { n.Add(1) }, bgtask.EventCompleted)
	cancelFleet(b, f)
}

// cancelFleet starts f's fleet of instances and cancels it, in each iteration.
func cancelFleet(b *testing.B, f *fleetHost) {
	for b.Loop() {
		b.StopTimer()
		f.start(b)
		b.StartTimer()
		f.host.Cancel(bgtask.Abort)
		f.completed.Wait()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*fleet), "ns/instance")
	_ = f.host.Shutdown(context.Background())
}

func BenchmarkCancelFleetBaselineContext(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		parent, cancel := context.WithCancel(context.Background())
		var running, done sync.WaitGroup
		running.Add(fleet)
		done.Add(fleet)
		for range fleet {
			ctx, cancelChild := context.WithCancel(parent)
			go func() {
				defer done.Done()
				defer cancelChild()
				running.Done()
				<-ctx.Done()
			}()
		}
		running.Wait()
		b.StartTimer()
		cancel()
		done.Wait()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*fleet), "ns/instance")
}

// Time triggers at scale: the heap per registered trigger and the cost of registering and
// unregistering one among n, beside one runtime timer per trigger (what the scheduler
// avoids) and a bare heap push.

var nopTask = bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })

// The heap benchmarks measure their first iteration only: stopped runtime timers leave the
// timer heap lazily, so a later iteration would count the previous one's as freed.

func BenchmarkHeapPerTimeTrigger(b *testing.B) {
	measured := false
	for b.Loop() {
		goroutines := runtime.NumGoroutine()
		h, _ := bgtask.NewHost()
		before := heapNow()
		regs := make([]*bgtask.Registration, fleet)
		trig := &bgtask.TimeTrigger{FreshnessTime: time.Hour}
		for k := range regs {
			regs[k], _ = h.Register(bgtask.Builder{Name: "t", Task: nopTask, Trigger: trig})
		}
		if !measured {
			measured = true
			b.ReportMetric(float64(heapNow()-before)/fleet, "B/trigger")
			b.ReportMetric(float64(runtime.NumGoroutine()-goroutines), "goroutines")
		}
		_ = h.Shutdown(context.Background())
	}
}

func BenchmarkHeapPerTimeTriggerBaselineTimer(b *testing.B) {
	measured := false
	for b.Loop() {
		before := heapNow()
		timers := make([]*time.Timer, fleet)
		for k := range timers {
			timers[k] = time.AfterFunc(time.Hour, func() {})
		}
		if !measured {
			measured = true
			b.ReportMetric(float64(heapNow()-before)/fleet, "B/trigger")
		}
		for _, t := range timers {
			t.Stop()
		}
	}
}

func BenchmarkRegisterUnregisterTimeTrigger(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h, _ := bgtask.NewHost()
			trig := &bgtask.TimeTrigger{FreshnessTime: time.Hour}
			for range n {
				_, _ = h.Register(bgtask.Builder{Name: "t", Task: nopTask, Trigger: trig})
			}
			b.ReportAllocs()
			for b.Loop() {
				r, _ := h.Register(bgtask.Builder{Name: "t", Task: nopTask, Trigger: trig})
				r.Unregister(false)
			}
			_ = h.Shutdown(context.Background())
		})
	}
}

func BenchmarkRegisterUnregisterBaselineHeap(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var h timeHeap
			for k := range n {
				heap.Push(&h, time.Duration(k))
			}
			b.ReportAllocs()
			for b.Loop() {
				heap.Push(&h, time.Duration(n/2))
				heap.Remove(&h, len(h)-1)
			}
		})
	}
}

type timeHeap []time.Duration

func (h timeHeap) Len() int           { return len(h) }
func (h timeHeap) Less(a, b int) bool { return h[a] < h[b] }
func (h timeHeap) Swap(a, b int)      { h[a], h[b] = h[b], h[a] }
func (h *timeHeap) Push(x any)        { *h = append(*h, x.(time.Duration)) }
func (h *timeHeap) Pop() any          { x := (*h)[len(*h)-1]; *h = (*h)[:len(*h)-1]; return x }

// Lateness: 10,000 time triggers due in the same second, from ScheduledAt to Run, beside
// 10,000 runtime timers due in the same second, from their due time to their func.

const burst = 10_000

func reportLateness(b *testing.B, late []time.Duration) {
	slices.Sort(late)
	b.ReportMetric(float64(late[len(late)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(late[len(late)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(late[0].Microseconds())/1000, "min-ms")
}

// The lateness benchmarks start with the goroutine descriptors and stacks a burst needs
// already made, so that they measure the scheduling rather than the first page faults of
// a program that never ran 10,000 goroutines before; they report over all iterations.

func BenchmarkTimeTriggerLateness(b *testing.B) {
	bgtask.WarmUp(2 * burst)
	var lateAll []time.Duration
	for b.Loop() {
		h, _ := bgtask.NewHost(bgtask.WithLogger(nil))
		late := make([]time.Duration, burst)
		var n atomic.Int64
		var all sync.WaitGroup
		all.Add(burst)
		task := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			at := inst.TriggerDetails().(*bgtask.TimeTriggerDetails).ScheduledAt
			if k := n.Add(1) - 1; k < burst {
				late[k] = time.Since(at)
				all.Done()
			}
			return nil
		})
		trig := &bgtask.TimeTrigger{FreshnessTime: time.Second}
		for range burst {
			_, _ = h.Register(bgtask.Builder{Name: "due", Task: task, Trigger: trig})
		}
		all.Wait()
		_ = h.Shutdown(context.Background())
		lateAll = append(lateAll, late...)
	}
	reportLateness(b, lateAll)
}

func BenchmarkTimeTriggerLatenessBaselineTimers(b *testing.B) {
	bgtask.WarmUp(2 * burst)
	var lateAll []time.Duration
	for b.Loop() {
		late := make([]time.Duration, burst)
		var all sync.WaitGroup
		all.Add(burst)
		for k := range burst {
			due := time.Now().Add(time.Second)
			time.AfterFunc(time.Second, func() {
				late[k] = time.Since(due)
				all.Done()
			})
		}
		all.Wait()
		lateAll = append(lateAll, late...)
	}
	reportLateness(b, lateAll)
}

// Signal to 10,000 registrations until every Run started, beside the same launches made
// one Request at a time.

func signalFleet(b *testing.B, trig func(k int) bgtask.Trigger) (*bgtask.Host, *sync.WaitGroup) {
	h, _ := bgtask.NewHost(bgtask.WithLogger(nil))
	var started sync.WaitGroup
	task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { started.Done(); return nil })
	for k := range burst {
		if _, err := h.Register(bgtask.Builder{Name: "s", Task: task, Trigger: trig(k)}); err != nil {
			b.Fatal(err)
		}
	}
	return h, &started
}

func BenchmarkSignalLaunch(b *testing.B) {
	sys := &bgtask.SystemTrigger{Type: bgtask.SystemTriggerPowerStateChange}
	h, started := signalFleet(b, func(int) bgtask.Trigger { return sys })
	for b.Loop() {
		started.Add(burst)
		h.Signal(bgtask.SystemTriggerPowerStateChange)
		started.Wait()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*burst), "ns/launch")
	_ = h.Shutdown(context.Background())
}

func BenchmarkSignalLaunchBaselineRequest(b *testing.B) {
	trigs := make([]*bgtask.ApplicationTrigger, burst)
	h, started := signalFleet(b, func(k int) bgtask.Trigger { trigs[k] = bgtask.NewApplicationTrigger(); return trigs[k] })
	ctx := context.Background()
	for b.Loop() {
		started.Add(burst)
		for _, t := range trigs {
			_, _ = t.Request(ctx, nil)
		}
		started.Wait()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*burst), "ns/launch")
	_ = h.Shutdown(ctx)
}

// BenchmarkAllTasks10000 and BenchmarkInstances1000 are what a look at the host costs (as
// bgtaskhttp's /api/state takes one). Instances holds the host's lock only while it
// lists its 1,000 instances (it reads each outside), AllTasks only while it copies its
// 10,000 registrations (BenchmarkRegistrationsLockHold; it sorts them after): a launch
// waits at most that long for either.
func BenchmarkAllTasks10000(b *testing.B) {
	h, _ := bgtask.NewHost(bgtask.WithLogger(nil))
	trig := bgtask.NewApplicationTrigger()
	for k := range 10_000 {
		_, _ = h.Register(bgtask.Builder{Name: fmt.Sprint("r", k), Trigger: trig, Task: nopTask})
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(h.AllTasks()) != 10_000 {
			b.Fatal("lost a registration")
		}
	}
	_ = h.Shutdown(context.Background())
}

func BenchmarkInstances1000(b *testing.B) {
	h, _ := bgtask.NewHost(bgtask.WithLogger(nil))
	release := make(chan struct{})
	started := make(chan struct{}, 1000)
	for k := range 1000 {
		trig := bgtask.NewApplicationTrigger()
		_, _ = h.Register(bgtask.Builder{Name: fmt.Sprint("r", k), Trigger: trig, Task: bgtask.TaskFunc(
			func(context.Context, bgtask.BackgroundTaskInstance) error {
				started <- struct{}{}
				<-release
				return nil
			})})
		_, _ = trig.Request(context.Background(), nil)
	}
	for range 1000 {
		<-started
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(h.Instances()) != 1000 {
			b.Fatal("lost an instance")
		}
	}
	close(release)
	_ = h.Shutdown(context.Background())
}

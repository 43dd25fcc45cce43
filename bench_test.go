package bgtask_test

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/bgtask-go/bgtask"
)

// parked starts one instance that waits until the benchmark ends and returns it.
func parked(b *testing.B) (bgtask.BackgroundTaskInstance, *bgtask.Registration) {
	b.Helper()
	h, err := bgtask.NewHost(bgtask.WithLogger(nil))
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
	h, _ := bgtask.NewHost(bgtask.WithLogger(nil))
	trig := bgtask.NewApplicationTrigger()
	reg, _ := h.Register(bgtask.Builder{Name: "e2e", Trigger: trig,
		Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })})
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
	for b.Loop() {
		before := heapNow()
		f := newFleet(b)
		registered := heapNow()
		f.start(b)
		running := heapNow()
		b.ReportMetric(float64(registered-before)/fleet, "B/registration")
		b.ReportMetric(float64(running-registered)/fleet, "B/instance")
		f.host.Cancel(bgtask.Abort)
		f.completed.Wait()
		_ = f.host.Shutdown(context.Background())
	}
}

func BenchmarkHeapPerRunningInstanceBaselineGoroutine(b *testing.B) {
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
		b.ReportMetric(float64(heapNow()-before)/fleet, "B/instance")
		cancel()
		done.Wait()
	}
}

func BenchmarkCancelFleet(b *testing.B) {
	f := newFleet(b)
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

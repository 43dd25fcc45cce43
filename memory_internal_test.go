package bgtask

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMemoryPressureSuspendsThenRevokesNewestFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var heap atomic.Uint64
		heap.Store(100)
		var log strings.Builder
		h, err := NewHost(withMemoryReader(func() (uint64, uint64) { return heap.Load(), 1000 }, func() {}),
			WithPolicy(Policy{MemoryLimitFraction: 0.8, MemoryPressurePeriod: 5 * time.Second, MemoryCheckInterval: time.Second}),
			WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
		require.NoError(t, err)
		completed := make(chan string, 3)
		var trigs []*ApplicationTrigger
		for _, name := range []string{"oldest", "middle", "newest"} {
			trig := NewApplicationTrigger()
			reg, err := h.Register(Builder{Name: name, Trigger: trig, Task: TaskFunc(func(ctx context.Context, inst BackgroundTaskInstance) error {
				<-ctx.Done()
				return nil
			})})
			require.NoError(t, err)
			reg.OnCompleted(func(e CompletedEventArgs) {
				if e.Reason == ResourceRevocation {
					completed <- name
				}
			})
			_, err = trig.Request(context.Background(), nil)
			require.NoError(t, err)
			synctest.Wait()
			trigs = append(trigs, trig)
		}
		start := time.Now()
		heap.Store(900)
		time.Sleep(time.Second + time.Millisecond) // the next check sees the pressure
		res, err := NewApplicationTrigger().Request(context.Background(), nil)
		assert.ErrorIs(t, err, ErrNotRegistered, "sanity")
		assert.Equal(t, UnknownError, res)
		h.Resume() // the program's Resume does not end a suspension for memory
		h.lock()
		assert.True(t, h.suspendedLocked(), "suspended under pressure")
		h.unlock()

		assert.Equal(t, "newest", <-completed)
		assert.Equal(t, 6*time.Second, time.Since(start).Truncate(time.Second), "revoked once the pressure lasted the period")
		assert.Equal(t, "middle", <-completed)
		assert.Equal(t, 7*time.Second, time.Since(start).Truncate(time.Second), "one more at each check")
		heap.Store(500)
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Empty(t, completed, "the oldest survives once the pressure is gone")
		h.lock()
		assert.False(t, h.suspendedLocked(), "resumed")
		h.unlock()
		res, err = trigs[1].Request(context.Background(), nil)
		require.NoError(t, err)
		assert.Equal(t, Allowed, res)
		require.NoError(t, h.Shutdown(context.Background()))
		for _, msg := range []string{`pressure: host suspended"`, `instance revoked" task=newest`, `instance revoked" task=middle`, `pressure over: host resumed"`} {
			assert.Contains(t, log.String(), msg)
		}
	})
}

// The heap reading counts dead objects until the next collection: a host suspended for
// pressure that allocates nothing would wait minutes for one. It collects itself, and
// resumes at the first check after the pressure ended.
func TestMemoryPressureEndsWithoutAllocation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var live, read atomic.Uint64 // read lags live until a collection
		live.Store(900)
		read.Store(900)
		collect := func() { read.Store(live.Load()) }
		h, err := NewHost(withMemoryReader(func() (uint64, uint64) { return read.Load(), 1000 }, collect),
			WithPolicy(Policy{MemoryLimitFraction: 0.5, MemoryPressurePeriod: time.Hour, MemoryCheckInterval: time.Second}),
			WithLogger(slog.New(slog.DiscardHandler)))
		require.NoError(t, err)
		time.Sleep(time.Second + time.Millisecond)
		h.lock()
		require.True(t, h.suspendedLocked(), "suspended at the first check")
		h.unlock()
		live.Store(100) // the task holding memory ended; nothing allocates
		time.Sleep(time.Second)
		synctest.Wait()
		h.lock()
		assert.False(t, h.suspendedLocked(), "resumed at the next check")
		h.unlock()
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestMemoryPressureNeedsALimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, err := NewHost(withMemoryReader(func() (uint64, uint64) { return math.MaxInt64 - 1, math.MaxInt64 }, func() {}),
			WithPolicy(Policy{MemoryLimitFraction: 0.5}))
		require.NoError(t, err)
		time.Sleep(time.Minute)
		h.lock()
		assert.False(t, h.suspendedLocked())
		h.unlock()
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestRuntimeMemoryReading(t *testing.T) {
	heap, limit := readRuntimeMemory()
	assert.Positive(t, heap)
	assert.Positive(t, limit)
}

// A revocation's EventRevoked comes right after its EventCanceled, before the instance's
// EventCompleted, however long the log takes with the cancellation.
func TestRevokedComesBeforeCompleted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var heap atomic.Uint64
		heap.Store(100)
		release := make(chan struct{})
		h, err := NewHost(withMemoryReader(func() (uint64, uint64) { return heap.Load(), 1000 }, func() {}),
			WithPolicy(Policy{MemoryLimitFraction: 0.8, MemoryPressurePeriod: 5 * time.Second, MemoryCheckInterval: time.Second}),
			WithLogger(slog.New(slowLog{release})))
		require.NoError(t, err)
		var mu sync.Mutex
		var kinds []EventKind
		h.Subscribe(func(e Event) {
			mu.Lock()
			kinds = append(kinds, e.Kind)
			mu.Unlock()
			if e.Kind == EventCompleted {
				close(release) // the log of the cancellation returns only now
			}
		}, EventCanceled, EventRevoked, EventCompleted)
		trig := NewApplicationTrigger()
		_, err = h.Register(Builder{Name: "r", Trigger: trig, Task: TaskFunc(func(ctx context.Context, _ BackgroundTaskInstance) error {
			<-ctx.Done()
			return nil
		})})
		require.NoError(t, err)
		_, err = trig.Request(t.Context(), nil)
		require.NoError(t, err)
		heap.Store(900)
		time.Sleep(10 * time.Second) // suspended, then the instance revoked
		synctest.Wait()
		heap.Store(100)
		require.NoError(t, h.Shutdown(t.Context()))
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, []EventKind{EventCanceled, EventRevoked, EventCompleted}, kinds)
	})
}

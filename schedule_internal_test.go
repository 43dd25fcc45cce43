package bgtask

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTimeTriggersShareOneGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, err := NewHost()
		require.NoError(t, err)
		task := TaskFunc(func(context.Context, BackgroundTaskInstance) error { return nil })
		for k := range 1000 {
			_, err := h.Register(Builder{Name: "t", Task: task, Trigger: &TimeTrigger{FreshnessTime: time.Duration(k+1) * time.Hour}})
			require.NoError(t, err)
		}
		synctest.Wait()
		h.lib.mu.Lock()
		assert.Equal(t, 1, h.lib.count.n, "one goroutine of the library, the scheduler, for all of them")
		h.lib.mu.Unlock()
		require.NoError(t, h.Shutdown(context.Background()))
		assert.Zero(t, h.lib.count.n, "joined by Shutdown")
	})
}

func TestUnregisterForgetsAFireWaitingForASlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, err := NewHost(WithPolicy(Policy{MaxConcurrent: 1}))
		require.NoError(t, err)
		block := TaskFunc(func(ctx context.Context, _ BackgroundTaskInstance) error { <-ctx.Done(); return nil })
		trig := NewApplicationTrigger()
		_, err = h.Register(Builder{Name: "running", Trigger: trig, Task: block})
		require.NoError(t, err)
		_, err = trig.Request(context.Background(), nil)
		require.NoError(t, err)
		for range 100 {
			waiting := NewApplicationTrigger()
			r, err := h.Register(Builder{Name: "waiting", Trigger: waiting, Task: block})
			require.NoError(t, err)
			_, err = waiting.Request(context.Background(), nil)
			require.NoError(t, err)
			r.Unregister(false)
		}
		h.lock()
		assert.Empty(t, h.slots, "nothing left waiting for a slot")
		h.unlock()
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

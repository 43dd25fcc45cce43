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

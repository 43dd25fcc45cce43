package bgtask_test

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

func TestCompletionsKeepsTheLast100NewestFirst(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	last, total := h.Completions()
	assert.Empty(t, last)
	assert.Zero(t, total)
	trig := bgtask.NewApplicationTrigger()
	reg := mustRegister(t, h, bgtask.Builder{Name: "n", Trigger: trig, Task: bgtask.TaskFunc(
		func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			k, _ := bgtask.Arg[int](inst, "k")
			inst.SetProgress(uint32(k))
			return nil
		})})
	for k := range 105 {
		_, _, err := trig.RequestAndWait(t.Context(), map[string]any{"k": k})
		require.NoError(t, err)
	}
	last, total = h.Completions()
	assert.Equal(t, uint64(105), total)
	require.Len(t, last, 100)
	for k, c := range last {
		assert.Equal(t, reg, c.Task)
		assert.Equal(t, uint32(104-k), c.Progress)
	}
	require.NoError(t, h.Shutdown(t.Context()))
}

func TestCompletionsListDroppedFires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil))
		reg := mustRegister(t, h, bgtask.Builder{Name: "x", Trigger: &bgtask.SystemTrigger{Type: bgtask.SystemTriggerUserPresent},
			Task: nopTask, Conditions: []bgtask.Condition{bgtask.NewCondition(false)}})
		h.Signal(bgtask.SystemTriggerUserPresent)
		reg.Unregister(false)
		last, total := h.Completions()
		assert.Equal(t, uint64(1), total)
		require.Len(t, last, 1)
		assert.True(t, last[0].Canceled)
		assert.True(t, last[0].Started.IsZero())
		require.NoError(t, h.Shutdown(t.Context()))
	})
}

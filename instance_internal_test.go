package bgtask

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An instance terminated before its goroutine ran (here, before it is even launched) is
// over: its goroutine does not call Run, and its result says it never started.
func TestTerminatedBeforeRunIsNotRun(t *testing.T) {
	synctest.Test(t, terminatedBeforeRun)
}

func terminatedBeforeRun(t *testing.T) {
	h, err := NewHost(WithLogger(nil))
	require.NoError(t, err)
	var runs atomic.Int32
	trig := NewApplicationTrigger()
	r, err := h.Register(Builder{Name: "x", Trigger: trig, Task: TaskFunc(func(context.Context, BackgroundTaskInstance) error {
		runs.Add(1)
		return nil
	})})
	require.NoError(t, err)
	done := make(chan CompletedEventArgs, 1)
	r.OnCompleted(func(e CompletedEventArgs) { done <- e })

	h.lock()
	require.Equal(t, Allowed, h.fireLocked(r, &ApplicationTriggerDetails{}, true, nil))
	i := r.running
	i.cancel(Abort)
	i.terminate() // its end waits for the lock, held here
	h.unlock()    // launches it, and retires it

	e := <-done
	synctest.Wait() // for its goroutine
	assert.True(t, errors.Is(e.Err, ErrTerminated), "%v", e.Err)
	assert.True(t, e.Started.IsZero())
	require.NoError(t, h.Shutdown(context.Background()))
	assert.Zero(t, runs.Load(), "Run is not called")
	assert.Empty(t, h.Instances())
}

package bgtaskriver

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

// A job River starts after Stop removed the progress hooks is tracked as any other.
func TestTrackAfterRemoveHooks(t *testing.T) {
	h, err := bgtask.NewHost(bgtask.WithLogger(nil))
	require.NoError(t, err)
	r, err := h.Register(bgtask.Builder{Name: "x", Trigger: bgtask.NewApplicationTrigger(),
		Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })})
	require.NoError(t, err)
	var p progress
	p.track(h, r, 1, uuid.New())
	p.removeHooks()
	id := uuid.New()
	require.NotPanics(t, func() { p.track(h, r, 2, id) })
	p.finish(id)
	p.removeHooks()
	require.NoError(t, h.Shutdown(context.Background()))
}

// The hooks of registrations that were unregistered go, but for those whose instance
// still runs here: a program that registers and unregisters many keeps few.
func TestTrackPrunesTheHooksOfUnregisteredRegistrations(t *testing.T) {
	h, err := bgtask.NewHost(bgtask.WithLogger(nil))
	require.NoError(t, err)
	register := func(name string) *bgtask.Registration {
		r, err := h.Register(bgtask.Builder{Name: name, Trigger: bgtask.NewApplicationTrigger(),
			Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })})
		require.NoError(t, err)
		return r
	}
	var p progress
	kept := register("kept")
	p.track(h, kept, 1, uuid.New())
	running := register("running")
	still := uuid.New()
	p.track(h, running, 2, still)
	running.Unregister(false) // its instance goes on
	for k := range 1000 {
		r := register(fmt.Sprint("r", k))
		id := uuid.New()
		p.track(h, r, int64(k+3), id)
		p.finish(id)
		r.Unregister(false)
	}
	assert.LessOrEqual(t, len(p.hooks), 2*minPrune, "hooks kept")
	assert.Contains(t, p.hooks, kept, "registered")
	assert.Contains(t, p.hooks, running, "unregistered, but its instance runs")
	p.finish(still)
	p.removeHooks()
	require.NoError(t, h.Shutdown(context.Background()))
}

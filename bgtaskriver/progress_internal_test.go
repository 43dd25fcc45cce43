package bgtaskriver

import (
	"context"
	"testing"

	"github.com/google/uuid"
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
	p.track(r, 1, uuid.New())
	p.removeHooks()
	id := uuid.New()
	require.NotPanics(t, func() { p.track(r, 2, id) })
	p.finish(id)
	p.removeHooks()
	require.NoError(t, h.Shutdown(context.Background()))
}

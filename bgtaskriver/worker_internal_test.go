package bgtaskriver

import (
	"context"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A fire whose registration is unregistered between Work's lookup and the start of its
// instance is dropped, as one whose registration Work does not find: its job is
// cancelled, not failed (which would use up one of its attempts, and run it again).
func TestFireOfARegistrationUnregisteredMeanwhileIsDropped(t *testing.T) {
	f, _ := migratedFleet(t)
	h, err := bgtask.NewHost(append(f.Options(), bgtask.WithLogger(nil),
		bgtask.WithEntryPoint("job", bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })))...)
	require.NoError(t, err)
	defer func() { require.NoError(t, h.Shutdown(context.Background())) }()
	r, err := h.Register(bgtask.Builder{Name: "x", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
	require.NoError(t, err)
	r.Unregister(false) // after Work's lookup
	now := time.Now()
	job := &river.Job[jobArgs]{JobRow: &rivertype.JobRow{ID: 1, AttemptedAt: &now}, Args: jobArgs{TaskID: r.TaskID(), Name: r.Name()}}
	err = f.run(t.Context(), h, r, job, &bgtask.ApplicationTriggerDetails{})
	var cancel *rivertype.JobCancelError
	assert.ErrorAs(t, err, &cancel, "the fire is dropped")
}

package bgtaskriver_test

import (
	"context"
	"testing"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A replica that stops cancels its instances with Terminating; their fires run again on
// another replica, or end, canceled, with Config.StopCancelsJobs. A fire handed back can
// still be canceled from anywhere.
func TestStoppingReplicaHandsItsFiresOver(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		stopCancels      bool
		cancelHandedBack bool
	}{
		{name: "runs again elsewhere"},
		{name: "StopCancelsJobs", stopCancels: true},
		{name: "canceled while handed back", cancelHandedBack: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newFleetDB(t)
			causes := make(chan error, 1)
			entry, started := runs(func(replica string, ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
				if replica == "a" {
					<-ctx.Done()
					causes <- context.Cause(ctx)
				}
				return nil
			})
			a := db.replica(t, "a", bgtaskriver.Config{StopCancelsJobs: tc.stopCancels}, entry("a"))
			b := db.replica(t, "b", bgtaskriver.Config{}, entry("b"))
			trig := bgtask.NewApplicationTrigger()
			a.ensure(t, bgtask.Builder{Name: "handed-over", TaskEntryPoint: "job", Trigger: trig})
			b.ensure(t, bgtask.Builder{Name: "handed-over", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
			a.start(t)
			_, err := trig.Request(t.Context(), nil)
			require.NoError(t, err)
			first := next(t, started)
			require.Equal(t, "a", first.replica)

			require.NoError(t, a.fleet.Stop(t.Context()))
			var ce *bgtask.CanceledError
			require.ErrorAs(t, next(t, causes), &ce)
			assert.Equal(t, bgtask.Terminating, ce.Reason)
			switch {
			case tc.stopCancels:
				st := finished(t, b.fleet, first.id)
				assert.Equal(t, first.id, st.InstanceID)
				assert.Equal(t, "a", st.Replica)
				assert.True(t, st.Result.Canceled)
				assert.Equal(t, bgtask.Terminating, st.Result.Reason)
				b.start(t) // the job is finished: nothing can run it again
				assert.Equal(t, "cancelled", db.jobs(t)[0].state)
			case tc.cancelHandedBack:
				st, err := b.fleet.Instance(t.Context(), first.id)
				require.NoError(t, err)
				assert.Equal(t, bgtaskriver.Queued, st.Phase, "handed back")
				require.NoError(t, b.fleet.Cancel(t.Context(), first.id))
				st = finished(t, b.fleet, first.id)
				assert.True(t, st.Result.Canceled)
				assert.Equal(t, bgtask.Abort, st.Result.Reason)
				assert.True(t, st.Result.Started.IsZero(), "dropped before it ran again")
				b.start(t)
			default:
				b.start(t)
				second := next(t, started)
				assert.Equal(t, "b", second.replica)
				assert.NotEqual(t, first.id, second.id, "a new instance")
				st := finished(t, a.fleet, first.id) // the fire, whichever instance ran it
				assert.Equal(t, second.id, st.InstanceID)
				assert.Equal(t, "b", st.Replica)
				assert.False(t, st.Result.Canceled)
				js := db.jobs(t)
				require.Len(t, js, 1)
				assert.Equal(t, 1, js[0].attempt, "the stop handed its attempt back")
			}
			none(t, started, "no other run")
		})
	}
}

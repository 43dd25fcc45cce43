package bgtaskriver_test

import (
	"context"
	"errors"
	"testing"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An instance running on one replica, canceled from another: on its replica it is
// canceled with Abort, its OnCanceled handlers run, and its result is read on the other.
func TestCancelFromAnotherReplica(t *testing.T) {
	t.Parallel()
	db := newFleetDB(t)
	reasons := make(chan bgtask.CancellationReason, 1)
	causes := make(chan error, 1)
	entry, started := runs(func(_ string, ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		inst.OnCanceled(func(_ bgtask.BackgroundTaskInstance, r bgtask.CancellationReason) { reasons <- r })
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return context.Cause(ctx)
	})
	replicas := map[string]*replica{
		"a": db.replica(t, "a", bgtaskriver.Config{}, entry("a")),
		"b": db.replica(t, "b", bgtaskriver.Config{}, entry("b")),
	}
	trigs := make(map[string]*bgtask.ApplicationTrigger)
	var reg *bgtask.Registration
	for name, r := range replicas {
		trigs[name] = bgtask.NewApplicationTrigger()
		reg = r.ensure(t, bgtask.Builder{Name: "cancel-me", TaskEntryPoint: "job", Trigger: trigs[name]})
		r.start(t)
	}
	_, err := trigs["a"].Request(t.Context(), nil)
	require.NoError(t, err)
	run := next(t, started)
	runner, other := replicas["a"], replicas["b"]
	if run.replica == "b" {
		runner, other = other, runner
	}
	st, err := other.fleet.Instance(t.Context(), run.id)
	require.NoError(t, err)
	assert.Equal(t, bgtaskriver.Running, st.Phase)
	assert.Equal(t, runner.name, st.Replica)
	assert.Equal(t, run.id, st.InstanceID)
	assert.Equal(t, reg.TaskID(), st.TaskID)
	assert.Equal(t, "cancel-me", st.Name)

	require.NoError(t, other.fleet.Cancel(t.Context(), run.id))
	var ce *bgtask.CanceledError
	require.ErrorAs(t, next(t, causes), &ce, "the cause on the replica that runs it")
	assert.Equal(t, bgtask.Abort, ce.Reason)
	assert.Equal(t, bgtask.Abort, next(t, reasons), "OnCanceled ran")

	st = finished(t, other.fleet, run.id)
	assert.Equal(t, run.id, st.InstanceID)
	assert.True(t, st.Result.Canceled)
	assert.Equal(t, bgtask.Abort, st.Result.Reason)
	assert.ErrorIs(t, st.Result.Err, bgtask.ErrCanceled)
	last, ok, err := other.fleet.LastResult(t.Context(), reg.TaskID())
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, st.Result, last)
	local, ok := runner.host.Lookup(reg.TaskID())
	require.True(t, ok)
	out, ok := local.LastResult()
	require.True(t, ok)
	assert.Equal(t, run.id, out.InstanceID, "the Completed event was raised where it ran")
	assert.Equal(t, bgtask.Abort, out.Reason)
	js := db.jobs(t)
	require.Len(t, js, 1)
	assert.Equal(t, "cancelled", js[0].state)
}

func TestCancelUnknownInstance(t *testing.T) {
	t.Parallel()
	db := newFleetDB(t)
	a := db.replica(t, "a", bgtaskriver.Config{})
	for _, id := range []uuid.UUID{uuid.New(), uuid.Nil, v8(1 << 40)} {
		err := a.fleet.Cancel(t.Context(), id)
		assert.ErrorIs(t, err, bgtaskriver.ErrUnknownInstance, id)
		_, err = a.fleet.Instance(t.Context(), id)
		assert.ErrorIs(t, err, bgtaskriver.ErrUnknownInstance, id)
	}
	assert.False(t, errors.Is(nil, bgtaskriver.ErrUnknownInstance))
}

// v8 returns a UUID of version 8 laid out as an InstanceID of job jobID.
func v8(jobID uint64) uuid.UUID {
	var id uuid.UUID
	w := jobID>>12<<16 | 0x8000 | jobID>>8&0xf<<8 | jobID&0xff
	for k := range 8 {
		id[k] = byte(w >> (56 - 8*k))
	}
	id[8] = 0x80
	return id
}

package bgtaskriver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The progress of an instance running on one replica is read on another within a second,
// and its result once it ended; a task's error or panic is its result, not a reason to
// run it again.
func TestProgressAndResultFromAnyReplica(t *testing.T) {
	t.Parallel()
	db := newFleetDB(t)
	progressed := make(chan struct{}, 1)
	release := make(chan struct{})
	entry, started := runs(func(_ string, _ context.Context, inst bgtask.BackgroundTaskInstance) error {
		if inst.Task().Name() == "panics" {
			inst.SetProgress(7)
			panic("oops")
		}
		for _, p := range []uint32{10, 20, 50} {
			inst.SetProgress(p)
		}
		progressed <- struct{}{}
		<-release
		return errors.New("boom")
	})
	replicas := map[string]*replica{
		"a": db.replica(t, "a", bgtaskriver.Config{}, entry("a")),
		"b": db.replica(t, "b", bgtaskriver.Config{}, entry("b")),
	}
	trigs := make(map[string]*bgtask.ApplicationTrigger)
	var fails, panics *bgtask.Registration
	for name, r := range replicas {
		trigs[name] = bgtask.NewApplicationTrigger()
		fails = r.ensure(t, bgtask.Builder{Name: "fails", TaskEntryPoint: "job", Trigger: trigs[name]})
		panics = r.ensure(t, bgtask.Builder{Name: "panics", TaskEntryPoint: "job", Trigger: trigs[name]})
		r.start(t)
	}
	ctx := t.Context()
	_, err := trigs["a"].Request(ctx, nil) // both registrations
	require.NoError(t, err)

	for range 2 {
		run := next(t, started)
		other := replicas["a"]
		if run.replica == "a" {
			other = replicas["b"]
		}
		if run.inst.Task().Name() == "panics" {
			st := finished(t, other.fleet, run.id)
			assert.Equal(t, "bgtask: panic: oops", st.Result.Err.Error())
			assert.Equal(t, uint32(7), st.Result.Progress)
			last, ok, err := other.fleet.LastResult(ctx, panics.TaskID())
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, st.Result, last)
			continue
		}
		<-progressed
		eventually(t, time.Second, func() bool {
			st, err := other.fleet.Instance(ctx, run.id)
			require.NoError(t, err)
			return st.Progress == 50
		}, "the other replica did not read the progress within a second")
		close(release)
		st := finished(t, other.fleet, run.id)
		assert.Equal(t, run.replica, st.Replica)
		assert.Equal(t, "boom", st.Result.Err.Error())
		assert.False(t, st.Result.Canceled)
		assert.Equal(t, uint32(50), st.Result.Progress)
		assert.False(t, st.Result.Started.IsZero())
		assert.True(t, st.Result.Finished.After(st.Result.Started))
		last, ok, err := other.fleet.LastResult(ctx, fails.TaskID())
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, st.Result, last)
	}
	for _, j := range db.jobs(t) {
		assert.Equal(t, "completed", j.state, j.name)
		assert.Equal(t, 1, j.attempt, "%s ran once", j.name)
	}
	none(t, started, "no run again")
}

package bgtaskriver_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Request on any replica runs once, on one of them, with its arguments; a second one
// while the first is queued or running is one too many.
func TestRequestRunsOnceOnAnyReplica(t *testing.T) {
	t.Parallel()
	db := newFleetDB(t)
	release := make(chan struct{})
	entry, started := runs(func(_ string, ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	a := db.replica(t, "a", bgtaskriver.Config{}, entry("a"))
	b := db.replica(t, "b", bgtaskriver.Config{}, entry("b"))
	trigA, trigB := bgtask.NewApplicationTrigger(), bgtask.NewApplicationTrigger()
	regA := a.ensure(t, bgtask.Builder{Name: "req", TaskEntryPoint: "job", Trigger: trigA})
	regB := b.ensure(t, bgtask.Builder{Name: "req", TaskEntryPoint: "job", Trigger: trigB})
	require.Equal(t, regA.TaskID(), regB.TaskID(), "one registration in the fleet")

	at := time.Date(2026, 11, 25, 8, 0, 0, 123456789, time.UTC)
	args := map[string]any{
		"n": 42, "big": int64(1) << 62, "u8": uint8(7), "f": 1.5, "f32": float32(0.25), "s": "x", "ok": true,
		"at": at, "d": 90 * time.Second, "raw": []byte{0, 1, 2}, "nil": nil,
		"list": []any{"a", 1.0}, "map": map[string]any{"k": "v"},
	}
	ctx := t.Context()
	res, err := trigA.Request(ctx, args)
	require.NoError(t, err)
	assert.Equal(t, bgtask.Allowed, res)
	res, err = trigB.Request(ctx, nil)
	require.NoError(t, err)
	assert.Equal(t, bgtask.CurrentlyRunning, res, "queued: one too many, from the other replica too")

	a.start(t)
	b.start(t)
	got := next(t, started)
	assert.Equal(t, args, got.details.(*bgtask.ApplicationTriggerDetails).Arguments, "the arguments, with their types")
	n, err := bgtask.Arg[int](got.inst, "n")
	require.NoError(t, err)
	assert.Equal(t, 42, n)
	for _, trig := range []*bgtask.ApplicationTrigger{trigA, trigB} {
		res, err = trig.Request(ctx, nil)
		require.NoError(t, err)
		assert.Equal(t, bgtask.CurrentlyRunning, res, "running: one too many")
	}
	close(release)

	// RequestAndWait waits for the fire's end, wherever it ran. Once the first job has
	// ended its registration takes a Request again.
	var out bgtask.CompletedEventArgs
	eventually(t, waitFor, func() bool {
		out, res, err = trigB.RequestAndWait(ctx, map[string]any{"n": 2})
		require.NoError(t, err)
		return res == bgtask.Allowed
	}, "the registration never took a second Request")
	second := next(t, started)
	assert.Equal(t, map[string]any{"n": 2}, second.details.(*bgtask.ApplicationTriggerDetails).Arguments)
	assert.Equal(t, second.id, out.InstanceID)
	assert.NoError(t, out.Err)
	assert.False(t, out.Started.IsZero())
	none(t, started, "each Request ran once")
	t.Logf("ran on %s, then on %s", got.replica, second.replica)
}

// A replica that does not have a registration (it was Ensured on another after this host
// started) leaves its fires to those that have it.
func TestUnknownRegistrationWaitsForAReplicaThatHasIt(t *testing.T) {
	t.Parallel()
	db := newFleetDB(t)
	entry, started := runs(nil)
	b := db.replica(t, "b", bgtaskriver.Config{}, entry("b")) // before the Ensure: its host never loads it
	a := db.replica(t, "a", bgtaskriver.Config{}, entry("a"))
	trig := bgtask.NewApplicationTrigger()
	a.ensure(t, bgtask.Builder{Name: "only-on-a", TaskEntryPoint: "job", Trigger: trig})
	b.start(t)
	res, err := trig.Request(t.Context(), nil)
	require.NoError(t, err)
	require.Equal(t, bgtask.Allowed, res)
	eventually(t, waitFor, func() bool {
		js := db.jobs(t)
		return len(js) == 1 && js[0].snoozes > 0
	}, "b did not snooze the job")
	none(t, started, "b cannot run it")
	a.start(t)
	assert.Equal(t, "a", next(t, started).replica)
}

// A OneShot registration's Request runs once in the fleet: on whichever replica takes it,
// the one that requested it included, and never again from any replica.
func TestOneShotRequestRunsOnceInTheFleet(t *testing.T) {
	t.Parallel()
	for _, replicas := range []int{1, 2} {
		t.Run(fmt.Sprint(replicas, " replicas"), func(t *testing.T) {
			t.Parallel()
			db := newFleetDB(t)
			entry, started := runs(nil)
			var trigs []*bgtask.ApplicationTrigger
			var rs []*replica
			for k := range replicas {
				r := db.replica(t, fmt.Sprint("r", k), bgtaskriver.Config{}, entry(fmt.Sprint("r", k)))
				trig := &bgtask.ApplicationTrigger{OneShot: true}
				r.ensure(t, bgtask.Builder{Name: "once", TaskEntryPoint: "job", Trigger: trig})
				trigs, rs = append(trigs, trig), append(rs, r)
			}
			res, err := trigs[0].Request(t.Context(), nil)
			require.NoError(t, err)
			require.Equal(t, bgtask.Allowed, res)
			for _, r := range rs {
				r.start(t)
			}
			got := next(t, started)
			st := finished(t, rs[0].fleet, got.id)
			assert.NoError(t, st.Result.Err)
			for _, trig := range trigs {
				res, err := trig.Request(t.Context(), nil)
				require.NoError(t, err)
				assert.NotEqual(t, bgtask.Allowed, res, "it fires once")
			}
			none(t, started, "a second run")
		})
	}
}

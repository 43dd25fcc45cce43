package bgtaskriver_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
)

// records counts the store's records.
func (db fleetDB) records(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, db.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+pgx.Identifier{db.schema, "bgtask_registration"}.Sanitize()).Scan(&n))
	return n
}

// A OneShot registration's instance handed back by a stopping replica runs again on a
// replica that only restored the registration from the store: the store keeps it until an
// instance ends there for good.
func TestOneShotHandedOverRunsAgainFromTheStore(t *testing.T) {
	t.Parallel()
	db := newFleetDB(t)
	entry, started := runs(func(replica string, ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
		if replica == "a" {
			<-ctx.Done() // until a stops
		}
		return nil
	})
	a := db.replica(t, "a", bgtaskriver.Config{}, entry("a"))
	trig := &bgtask.ApplicationTrigger{OneShot: true}
	a.ensure(t, bgtask.Builder{Name: "once", TaskEntryPoint: "job", Trigger: trig})
	a.start(t)
	res, err := trig.Request(t.Context(), nil)
	require.NoError(t, err)
	require.Equal(t, bgtask.Allowed, res)
	require.Equal(t, "a", next(t, started).replica)
	a.stop(t) // Terminating: the job goes back to River

	b := db.replica(t, "b", bgtaskriver.Config{}, entry("b")) // no Ensure: from the store only
	b.start(t)
	again := next(t, started)
	require.Equal(t, "b", again.replica)
	finished(t, b.fleet, again.id)
	eventually(t, waitFor, func() bool { return db.records(t) == 0 }, "the record stayed after the run")
	none(t, started, "a third run")
}

// A OneShot TimeTrigger runs once in the fleet even when the replicas' Registers gave it
// different times of the grid.
func TestOneShotTimeRunsOnceAcrossGridTimes(t *testing.T) {
	t.Parallel()
	db := newFleetDB(t)
	entry, started := runs(nil)
	a := db.replica(t, "a", bgtaskriver.Config{}, entry("a"))
	b := db.replica(t, "b", bgtaskriver.Config{}, entry("b"))
	once := bgtask.Builder{Name: "once", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: period, OneShot: true}}
	now := time.Now()
	time.Sleep(now.Truncate(period).Add(period + 800*time.Millisecond).Sub(now)) // late in a period
	a.ensure(t, once)
	time.Sleep(300 * time.Millisecond) // b's Register, in the next period: its time is a later one
	b.ensure(t, once)
	a.start(t)
	first := next(t, started)
	finished(t, a.fleet, first.id)
	a.stop(t)
	b.start(t)
	time.Sleep(3 * period) // b's own time comes and goes: nothing to wait on but time
	none(t, started, "a second run, for b's time")
}

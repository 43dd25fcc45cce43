package bgtaskriver

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitLong is how long a test waits for something that takes milliseconds, on a loaded
// machine.
const waitLong = 15 * time.Second

// timeInsertion returns the insertion of the job of time at of registration task.
func timeInsertion(task uuid.UUID, at time.Time) *insertion {
	args := jobArgs{TaskID: task, Name: "x", ScheduledAt: &at}
	return &insertion{
		params: river.InsertManyParams{Args: args, InsertOpts: &river.InsertOpts{Queue: queue, MaxAttempts: maxAttempts, UniqueOpts: onceUnique}},
		key:    keyOf(args),
		done:   make(chan struct{}, 1),
	}
}

// A batch of duplicates that deadlocks with another transaction on the rows of their jobs
// (as with River's completer) gives way within its lock_timeout, rather than holding the
// other transaction for Postgres's deadlock_timeout (1 s by default), and is inserted
// again.
func TestABatchGivesWayInADeadlock(t *testing.T) {
	f, schema := migratedFleet(t)
	ctx := t.Context()
	jobs, _ := tables(schema)
	at := time.Now().Truncate(time.Second).UTC()
	first, second := uuid.UUID{1}, uuid.UUID{2} // inserted in this order
	res, err := f.ins.insertMany(ctx, []*insertion{timeInsertion(first, at), timeInsertion(second, at)})
	require.NoError(t, err)
	job1, job2 := res[0].Job.ID, res[1].Job.ID

	// The other transaction locks the second job's row, then, once the batch of
	// duplicates has locked the first's and waits for the second's, the first's.
	other, err := f.pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: "BEGIN; SET LOCAL lock_timeout = '500ms'"})
	require.NoError(t, err)
	defer func() { _ = other.Rollback(context.Background()) }()
	_, err = other.Exec(ctx, "SELECT 1 FROM "+jobs+" WHERE id = $1 FOR UPDATE", job2)
	require.NoError(t, err)
	type answer struct {
		res []*rivertype.JobInsertResult
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := f.ins.insertMany(context.Background(), []*insertion{timeInsertion(first, at), timeInsertion(second, at)})
		done <- answer{res, err}
	}()
	awaitLockWait(t, f.pool, other, "river_job")
	_, err = other.Exec(ctx, "SELECT 1 FROM "+jobs+" WHERE id = $1 FOR UPDATE", job1)
	require.NoError(t, err, "the batch gave way before the other transaction's lock_timeout")
	require.NoError(t, other.Commit(ctx))
	got := <-done
	require.NoError(t, got.err, "inserted again")
	for _, r := range got.res {
		assert.True(t, r.UniqueSkippedAsDuplicate)
	}
}

// awaitLockWait returns once a session other than other's waits for a lock in a
// statement that names table, and fails t if none does within waitLong. It polls: only
// the server knows when a statement waits.
func awaitLockWait(t *testing.T, pool *pgxpool.Pool, other pgx.Tx, table string) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for waiting := 0; waiting == 0; {
		require.True(t, time.Now().Before(deadline), "no statement on %s waited for a lock", table)
		require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND datname = current_database() AND query ILIKE '%' || $2 || '%'
			AND pid <> $1`, other.Conn().PgConn().PID(), table).Scan(&waiting))
		time.Sleep(5 * time.Millisecond)
	}
}

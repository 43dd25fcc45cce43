package bgtaskriver

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask/bgtaskriver/internal/pgtest"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// migratedFleet returns a fleet, not started, on a schema of t's own with the fleet's
// tables, and the schema.
func migratedFleet(t *testing.T) (*Fleet, string) {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	f, err := New(pool, Config{Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, f.Migrate(t.Context()))
	return f, schema
}

// A time fire's decision finds the registration's unfinished time fires through the index
// that Migrate makes, not by reading every unfinished job of the queue.
func TestTimeFireDecisionUsesItsIndex(t *testing.T) {
	f, schema := migratedFleet(t)
	pool, ctx := f.pool, t.Context()
	require.NoError(t, f.Migrate(ctx), "again: it is idempotent")
	jobs, _ := tables(schema)
	// The unfinished time fires of 2,000 other registrations.
	_, err := pool.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (kind, queue, max_attempts, args)
		SELECT $1, $2, 1, jsonb_build_object('task_id', gen_random_uuid(), 'scheduled_at', now())
		FROM generate_series(1, 2000)`, jobs), kind, queue)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "ANALYZE "+jobs)
	require.NoError(t, err)
	rows, err := pool.Query(ctx, "EXPLAIN "+f.timeFireSQL, uuid.NewString(), int64(1), time.Now())
	require.NoError(t, err)
	defer rows.Close()
	var plan strings.Builder
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan.WriteString(line + "\n")
	}
	require.NoError(t, rows.Err())
	// The read of the running jobs may take River's index on (state, queue, …) instead:
	// few jobs run at once.
	assert.Contains(t, plan.String(), timeFireIndex, "the read of the later times' jobs uses the index")
	assert.NotContains(t, plan.String(), "Seq Scan on river_job", "no read of the jobs reads them all")
}

// Migrate again does not wait for the transactions that write jobs (nor hold those that
// come after it): the index exists, and it does not lock the job table.
func TestMigrateAgainDoesNotWaitForWriters(t *testing.T) {
	f, schema := migratedFleet(t)
	jobs, _ := tables(schema)
	writer, err := f.pool.Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = writer.Rollback(context.Background()) }()
	_, err = writer.Exec(t.Context(), "INSERT INTO "+jobs+" (kind, queue, max_attempts, args) VALUES ('other', 'other', 1, '{}')")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	require.NoError(t, f.Migrate(ctx), "while a transaction writes a job")
}

package bgtaskriver

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
)

// The rule of time fires, across the fleet. Locally, a time that comes while the
// registration's instance runs is held, and the times held meanwhile coalesce into one
// catch-up, for the latest; a time never runs after a later one. Every replica's
// scheduler dispatches every time of the grid, and the first insert of each wins (its
// job's unique key is the TaskID and the time), so the fleet has one job per time; when
// several are due at once, Work runs the latest and ends the others without running them.
//
// Deciding takes one statement (timeFireSQL), which reads the registration's unfinished
// jobs and, to see the later times that already ran, the table bgtask_time_fire: the
// latest time of each registration's grid whose fire was let run, which the statement
// moves forward. A job of time T:
//   - ends, superseded, when a job of a later time waits or runs;
//   - is snoozed (held) while another job of the registration runs;
//   - else runs, if no later time was let run, and then marks T as the latest; else ends,
//     superseded.
//
// The statement is not alone in its transaction with the jobs' state, but the fetch that
// makes a job running commits before its Work starts, so two jobs decided at once see
// each other: the later sees the earlier running (and waits), or the earlier sees the
// later unfinished (and ends).

// timeFireTable is the table of the latest times let run.
const timeFireTable = "bgtask_time_fire"

// timeFireSQL decides a time fire: for the job $2 of registration $1 at time $3, it says
// whether a later time's job waits or runs, whether another time fire's job of the
// registration runs, and whether the time was let run (marked as the latest). Its %[1]s
// is River's job table, %[2]s the table of the latest times, %[3]s and %[4]s the fleet's
// queue and kind. It reads the unfinished time fires' jobs of the registration only,
// which the index timeFireIndex finds.
const timeFireSQL = `WITH
	later AS (SELECT EXISTS (SELECT 1 FROM %[1]s WHERE state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
		AND queue = '%[3]s' AND kind = '%[4]s' AND args ? 'scheduled_at' AND args->>'task_id' = $1 AND id <> $2
		AND (args->>'scheduled_at')::timestamptz > $3) AS yes),
	running AS (SELECT EXISTS (SELECT 1 FROM %[1]s WHERE state = 'running'
		AND queue = '%[3]s' AND kind = '%[4]s' AND args ? 'scheduled_at' AND args->>'task_id' = $1 AND id <> $2) AS yes),
	let AS (INSERT INTO %[2]s AS t (task_id, latest)
		SELECT $1::uuid, $3 WHERE NOT (SELECT yes FROM later) AND NOT (SELECT yes FROM running)
		ON CONFLICT (task_id) DO UPDATE SET latest = excluded.latest WHERE t.latest <= excluded.latest
		RETURNING 1)
SELECT (SELECT yes FROM later), (SELECT yes FROM running), EXISTS (SELECT 1 FROM let)`

// createTimeFireSQL creates the table of the latest times; its %s is the table.
const createTimeFireSQL = `CREATE TABLE IF NOT EXISTS %s (task_id uuid PRIMARY KEY, latest timestamptz NOT NULL)`

// createTimeFireIndexSQL creates the index timeFireIndex, its %[1]s, on River's job
// table, its %[2]s. Migrate runs it only when the index does not exist: even with IF NOT
// EXISTS, Postgres would lock the job table first, and wait for every transaction that
// writes to it, while every write after it waited in turn.
//
// The index is on the registration of the time fires' unfinished jobs: without it, each
// decision read every unfinished job of the queue, and the instances of 1,000 time
// triggers due at once started within 1,110–1,267 ms of their time rather than 442–452
// (BenchmarkFleetTimeTriggersDueAtOnce, in one session). A Request's job is not in it, so
// that Requests do not pay for its upkeep.
const createTimeFireIndexSQL = `CREATE INDEX %[1]s ON %[2]s ((args->>'task_id'))
	WHERE queue = '` + queue + `' AND kind = '` + kind + `' AND args ? 'scheduled_at'
	AND state IN ('available', 'pending', 'retryable', 'running', 'scheduled')`

// timeFireIndex is the name of the index of createTimeFireIndexSQL.
const timeFireIndex = "bgtask_time_fire_jobs"

// migrateTimeFiresTx creates the table of the latest times, and the index timeFireIndex if
// it does not exist, in tx, on schema's tables.
func migrateTimeFiresTx(ctx context.Context, tx pgx.Tx, schema string) error {
	jobs, timeFires := tables(schema)
	if _, err := tx.Exec(ctx, fmt.Sprintf(createTimeFireSQL, timeFires)); err != nil {
		return err
	}
	index := qualified(schema, timeFireIndex)
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", index).Scan(&exists); err != nil || exists {
		return err
	}
	// The index's name takes no schema: it goes in its table's.
	_, err := tx.Exec(ctx, fmt.Sprintf(createTimeFireIndexSQL, pgx.Identifier{timeFireIndex}.Sanitize(), jobs))
	return err
}

// tables returns the quoted names of River's job table and of the latest times', in
// schema.
func tables(schema string) (jobs, timeFires string) {
	return qualified(schema, "river_job"), qualified(schema, timeFireTable)
}

// timeFire applies the rule above to job, a time fire's. It reports whether to run it,
// and, if not, what Work returns. A time let run that is then held on this replica
// (RunInstance's ErrHeld) is let run again at its next fetch: its mark is not later.
func (f *Fleet) timeFire(ctx context.Context, job *river.Job[jobArgs]) (end error, run bool) {
	var later, running, let bool
	err := f.pool.QueryRow(ctx, f.timeFireSQL, job.Args.TaskID.String(), job.ID, *job.Args.ScheduledAt).Scan(&later, &running, &let)
	switch {
	case err != nil:
		f.cfg.Logger.Warn("bgtaskriver: deciding a time fire", "job_id", job.ID, "error", err)
		return river.JobSnooze(elsewhere), false
	case running && !later:
		return river.JobSnooze(heldWait(job)), false
	case !let:
		f.record(ctx, record{Superseded: true})
		return nil, false
	}
	return nil, true
}

// timeFireSQLFor returns timeFireSQL on schema's tables.
func timeFireSQLFor(schema string) string {
	jobs, timeFires := tables(schema)
	return fmt.Sprintf(timeFireSQL, jobs, timeFires, queue, kind)
}

package bgtaskriver_test

import (
	"cmp"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
	"github.com/bgtask-go/bgtask/bgtaskriver/internal/pgtest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fleet's tests run replicas, each a host and its Fleet, on one schema of the test
// database: two River clients on one schema are two replicas of a program, as far as
// River and the fleet can tell.

// Fetch settings of the tests' replicas: a job handed back without a notification (a
// snooze, a stop) is fetched within a poll.
const (
	testFetchCooldown     = time.Millisecond
	testFetchPollInterval = 20 * time.Millisecond
)

// waitFor is how long a test waits for something the fleet does within a second or two,
// on a loaded machine.
const waitFor = 15 * time.Second

// fleetDB is a test's database schema, with River's tables and the store's.
type fleetDB struct {
	pool   *pgxpool.Pool
	schema string
}

// newFleetDB gives t a schema of its own with the fleet's tables.
func newFleetDB(t testing.TB) fleetDB {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	f, err := bgtaskriver.New(pool, bgtaskriver.Config{Schema: schema, Logger: quiet})
	require.NoError(t, err)
	require.NoError(t, f.Migrate(t.Context()))
	return fleetDB{pool, schema}
}

// quiet discards River's log, which warns of each job canceled remotely.
var quiet = slog.New(slog.DiscardHandler)

// replica is one replica of a test's fleet.
type replica struct {
	name  string
	host  *bgtask.Host
	fleet *bgtaskriver.Fleet
}

// replica returns a replica named name (its River ID), with cfg (the tests' fetch
// settings unless it has its own) and the host options opts, not started. It is stopped
// when t ends.
func (db fleetDB) replica(t testing.TB, name string, cfg bgtaskriver.Config, opts ...bgtask.Option) *replica {
	t.Helper()
	cfg.Schema, cfg.ID, cfg.Logger = db.schema, name, quiet
	cfg.FetchCooldown = cmp.Or(cfg.FetchCooldown, testFetchCooldown)
	cfg.FetchPollInterval = cmp.Or(cfg.FetchPollInterval, testFetchPollInterval)
	f, err := bgtaskriver.New(db.pool, cfg)
	require.NoError(t, err)
	h, err := bgtask.NewHost(append(f.Options(), append([]bgtask.Option{bgtask.WithLogger(nil)}, opts...)...)...)
	require.NoError(t, err)
	r := &replica{name: name, host: h, fleet: f}
	t.Cleanup(func() { r.stop(t) })
	return r
}

// start starts r's fleet.
func (r *replica) start(t testing.TB) {
	t.Helper()
	require.NoError(t, r.fleet.Start(t.Context(), r.host))
}

// stop stops r's fleet, then shuts its host down. Calling it again does nothing more.
func (r *replica) stop(t testing.TB) {
	t.Helper()
	ctx := context.Background() // also in a Cleanup, after t's context ended
	assert.NoError(t, r.fleet.Stop(ctx), r.name)
	assert.NoError(t, r.host.Shutdown(ctx), r.name)
}

// ensure Ensures b on r's host.
func (r *replica) ensure(t testing.TB, b bgtask.Builder) *bgtask.Registration {
	t.Helper()
	reg, err := r.host.Ensure(b)
	require.NoError(t, err)
	return reg
}

// ran is one run of a task, as the task saw it.
type ran struct {
	replica string
	id      uuid.UUID
	details any
	ctx     context.Context
	inst    bgtask.BackgroundTaskInstance
}

// runs returns the entry point "job" of each replica, whose task reports each run on the
// channel returned, then runs body (nil: it returns nil) with the replica's name.
func runs(body func(replica string, ctx context.Context, inst bgtask.BackgroundTaskInstance) error) (func(replica string) bgtask.Option, <-chan ran) {
	c := make(chan ran, 100)
	return func(replica string) bgtask.Option {
		return bgtask.WithEntryPoint("job", bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			c <- ran{replica: replica, id: inst.InstanceID(), details: inst.TriggerDetails(), ctx: ctx, inst: inst}
			if body == nil {
				return nil
			}
			return body(replica, ctx, inst)
		}))
	}, c
}

// next returns the next value of c, or fails t after waitFor.
func next[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(waitFor):
		t.Fatal("timed out")
		panic("unreachable")
	}
}

// eventually polls cond every 10 ms until it holds, and fails t after within.
func eventually(t *testing.T, within time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond) // polling the database: there is nothing to wait on
	}
}

// finished polls the status of instance id, read by f, until it is Finished.
func finished(t *testing.T, f *bgtaskriver.Fleet, id uuid.UUID) bgtaskriver.InstanceStatus {
	t.Helper()
	var st bgtaskriver.InstanceStatus
	eventually(t, waitFor, func() bool {
		var err error
		st, err = f.Instance(t.Context(), id)
		require.NoError(t, err)
		return st.Phase == bgtaskriver.Finished
	}, "the instance did not finish")
	return st
}

// job is a job row, as the tests read it.
type job struct {
	id      int64
	state   string
	attempt int
	snoozes int
	name    string
}

// jobs returns the fleet's jobs in db, oldest first.
func (db fleetDB) jobs(t *testing.T) []job {
	t.Helper()
	rows, err := db.pool.Query(t.Context(), "SELECT id, state, attempt, coalesce((metadata->>'snoozes')::int, 0), args->>'name' FROM "+
		pgx.Identifier{db.schema, "river_job"}.Sanitize()+" WHERE kind = 'bgtask' ORDER BY id")
	require.NoError(t, err)
	js, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (job, error) {
		var j job
		err := row.Scan(&j.id, &j.state, &j.attempt, &j.snoozes, &j.name)
		return j, err
	})
	require.NoError(t, err)
	return js
}

// none asserts that c holds nothing now.
func none[T any](t *testing.T, c <-chan T, msg string) {
	t.Helper()
	select {
	case v := <-c:
		t.Errorf("%s: got %v", msg, v)
	default:
	}
}

func TestNewAndStartRefuseBadArguments(t *testing.T) {
	t.Parallel()
	_, err := bgtaskriver.New(nil, bgtaskriver.Config{})
	assert.ErrorIs(t, err, bgtask.ErrInvalidArgument, "nil pool")
	db := newFleetDB(t)
	for _, cfg := range []bgtaskriver.Config{
		{Schema: "no-dashes"},
		{MaxWorkers: -1},
		{RescueAfter: -time.Second},
		{FetchCooldown: -time.Millisecond},
		{FetchPollInterval: -time.Millisecond},
		{FetchCooldown: time.Second, FetchPollInterval: time.Millisecond},
	} {
		_, err := bgtaskriver.New(db.pool, cfg)
		assert.ErrorIs(t, err, bgtask.ErrInvalidArgument, "%+v", cfg)
	}
	f, err := bgtaskriver.New(db.pool, bgtaskriver.Config{FetchCooldown: time.Second})
	require.NoError(t, err, "the poll's default follows a longer cooldown")

	r := db.replica(t, "a", bgtaskriver.Config{})
	assert.Equal(t, "a", r.fleet.ID())
	assert.ErrorIs(t, r.fleet.Start(t.Context(), nil), bgtask.ErrInvalidArgument)
	plain, err := bgtask.NewHost(bgtask.WithLogger(nil))
	require.NoError(t, err)
	defer func() { require.NoError(t, plain.Shutdown(context.Background())) }()
	assert.ErrorIs(t, r.fleet.Start(t.Context(), plain), bgtask.ErrInvalidArgument, "a host without the fleet's Options")
	assert.ErrorIs(t, f.Start(t.Context(), r.host), bgtask.ErrInvalidArgument, "the host of another fleet")
	r.start(t)
	assert.ErrorIs(t, r.fleet.Start(t.Context(), r.host), bgtask.ErrInvalidArgument, "started before")
	require.NoError(t, r.fleet.Stop(t.Context()))
	require.NoError(t, r.fleet.Stop(t.Context()), "again")
}

// Migrate needs a pool of two connections at least: one holds the lock of the migrations.
func TestMigrateRefusesAPoolOfOne(t *testing.T) {
	t.Parallel()
	db := newFleetDB(t)
	cfg := db.pool.Config()
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	defer pool.Close()
	f, err := bgtaskriver.New(pool, bgtaskriver.Config{Schema: db.schema, Logger: quiet})
	require.NoError(t, err)
	assert.ErrorIs(t, f.Migrate(t.Context()), bgtask.ErrInvalidArgument)
}

func TestPhaseString(t *testing.T) {
	for p, want := range map[bgtaskriver.Phase]string{
		bgtaskriver.Queued: "Queued", bgtaskriver.Running: "Running", bgtaskriver.Finished: "Finished", 0: "Phase(0)",
	} {
		assert.Equal(t, want, p.String())
	}
}

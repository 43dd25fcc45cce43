package bgtaskriver_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
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
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}

// record returns a record of about 300 bytes, different for each i.
func record(i int) []byte {
	return fmt.Appendf(nil, "record %d %s", i, strings.Repeat("x", 290))
}

// newStore returns a store, with its table, in a schema of its own, and the pool and
// schema it is on.
func newStore(t *testing.T) (*bgtaskriver.Store, *pgxpool.Pool, string) {
	t.Helper()
	pool, schema := pgtest.Schema(t)
	s, err := bgtaskriver.NewStore(pool, schema)
	require.NoError(t, err)
	require.NoError(t, s.Migrate(t.Context()))
	return s, pool, schema
}

// table returns the quoted name of the store's table in schema.
func table(schema string) string {
	return pgx.Identifier{schema, "bgtask_registration"}.Sanitize()
}

// exec runs sql on pool, and fails t if it fails.
func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	_, err := pool.Exec(t.Context(), sql, args...)
	require.NoError(t, err)
}

func TestStoreApplyLoad(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, schema := newStore(t)
	a, b, c, d := uuid.New(), uuid.New(), uuid.New(), uuid.New()

	got, err := s.Load(ctx)
	require.NoError(t, err)
	assert.Empty(t, got)

	require.NoError(t, s.Apply(ctx, map[uuid.UUID][]byte{a: record(1), b: record(2)}, nil))
	got, err = s.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[uuid.UUID][]byte{a: record(1), b: record(2)}, got)

	// Puts and deletes together; deleting a missing record is not an error.
	require.NoError(t, s.Apply(ctx, map[uuid.UUID][]byte{a: record(3), c: record(4)}, []uuid.UUID{b, d}))
	got, err = s.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[uuid.UUID][]byte{a: record(3), c: record(4)}, got)

	// A TaskID in both put and del is deleted; empty and nil records come back empty.
	e := uuid.New()
	put := map[uuid.UUID][]byte{c: record(5), d: {}, e: nil}
	require.NoError(t, s.Apply(ctx, put, []uuid.UUID{c}))
	put[d] = []byte("changed after Apply returned")
	got, err = s.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[uuid.UUID][]byte{a: record(3), d: {}, e: {}}, got)

	// Load returns copies.
	got[a][0] = 'X'
	again, err := s.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, record(3), again[a])

	// Another store on the table, as another replica has, sees the same.
	other, err := bgtaskriver.NewStore(pool, schema)
	require.NoError(t, err)
	got, err = other.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[uuid.UUID][]byte{a: record(3), d: {}, e: {}}, got)

	// updated_at follows the writes.
	var before, after time.Time
	require.NoError(t, pool.QueryRow(ctx, "SELECT updated_at FROM "+table(schema)+" WHERE task_id = $1", a).Scan(&before))
	require.NoError(t, s.Apply(ctx, map[uuid.UUID][]byte{a: record(6)}, nil))
	require.NoError(t, pool.QueryRow(ctx, "SELECT updated_at FROM "+table(schema)+" WHERE task_id = $1", a).Scan(&after))
	assert.True(t, after.After(before), "updated_at %v, then %v", before, after)
}

func TestStoreApplyNothingNeedsNoDatabase(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	s, err := bgtaskriver.NewStore(pool, schema) // no Migrate: there is no table
	require.NoError(t, err)
	assert.NoError(t, s.Apply(t.Context(), nil, nil))
	assert.NoError(t, s.Apply(t.Context(), map[uuid.UUID][]byte{}, []uuid.UUID{}))
	assert.Error(t, s.Apply(t.Context(), nil, []uuid.UUID{uuid.New()}), "this one needs the table")
}

// TestStoreApplyIsAtomic makes the puts, or the deletes, fail inside Postgres: the table is
// then as it was, the part that succeeded rolled back too.
func TestStoreApplyIsAtomic(t *testing.T) {
	t.Parallel()
	for name, refuse := range map[string]string{
		// A record "bad" breaks a constraint: the puts fail.
		"a put fails": `ALTER TABLE %[1]s ADD CONSTRAINT not_bad CHECK (record <> 'bad')`,
		// A trigger refuses every delete: the puts succeeded first.
		"the delete fails": `CREATE FUNCTION %[2]s.refuse() RETURNS trigger LANGUAGE plpgsql AS
			$$ BEGIN RAISE EXCEPTION 'deletes refused'; END $$;
			CREATE TRIGGER refuse BEFORE DELETE ON %[1]s FOR EACH ROW EXECUTE FUNCTION %[2]s.refuse()`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			s, pool, schema := newStore(t)
			a, b, c := uuid.New(), uuid.New(), uuid.New()
			require.NoError(t, s.Apply(ctx, map[uuid.UUID][]byte{a: record(1), c: record(3)}, nil))
			exec(t, pool, fmt.Sprintf(refuse, table(schema), pgx.Identifier{schema}.Sanitize()))

			err := s.Apply(ctx, map[uuid.UUID][]byte{a: record(10), b: []byte("bad")}, []uuid.UUID{c})
			require.Error(t, err)
			assert.ErrorContains(t, err, "bgtaskriver: writing "+schema+".bgtask_registration: ")
			got, err := s.Load(ctx)
			require.NoError(t, err)
			assert.Equal(t, map[uuid.UUID][]byte{a: record(1), c: record(3)}, got, "nothing written")
		})
	}
}

func TestStoreMigrateIsIdempotentAndSafeConcurrently(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	var wg sync.WaitGroup
	for range 8 { // as replicas starting together do
		wg.Go(func() {
			s, err := bgtaskriver.NewStore(pool, schema)
			if assert.NoError(t, err) {
				assert.NoError(t, s.Migrate(t.Context()))
			}
		})
	}
	wg.Wait()
	s, err := bgtaskriver.NewStore(pool, schema)
	require.NoError(t, err)
	id := uuid.New()
	require.NoError(t, s.Apply(t.Context(), map[uuid.UUID][]byte{id: record(1)}, nil))
	require.NoError(t, s.Migrate(t.Context()), "again, on a table with records")
	got, err := s.Load(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[uuid.UUID][]byte{id: record(1)}, got, "Migrate keeps them")
}

func TestStoreConcurrentUse(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := newStore(t)
	var wg sync.WaitGroup
	ids := make([]uuid.UUID, 8)
	for g := range ids {
		ids[g] = uuid.New()
		wg.Go(func() {
			for i := range 5 {
				assert.NoError(t, s.Apply(ctx, map[uuid.UUID][]byte{ids[g]: record(i)}, nil))
				recs, err := s.Load(ctx)
				if assert.NoError(t, err) {
					assert.Equal(t, record(i), recs[ids[g]])
				}
			}
		})
	}
	wg.Wait()
	recs, err := s.Load(ctx)
	require.NoError(t, err)
	assert.Len(t, recs, len(ids))
}

// Replicas write the same records at once (the countdowns of time triggers): their writes
// lock the rows in one order, and never deadlock.
func TestStoreWritersOfTheSameRecordsDoNotDeadlock(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := newStore(t)
	put := make(map[uuid.UUID][]byte)
	for i := range 200 {
		put[uuid.New()] = record(i)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for range 10 {
				assert.NoError(t, s.Apply(ctx, put, slices.Collect(maps.Keys(put))[:20]))
			}
		})
	}
	wg.Wait()
}

// TestStoreDefaultSchema gives NewStore no schema: the table is where the connections'
// search_path says, as River's tables are with an empty Config.Schema.
func TestStoreDefaultSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, schema := pgtest.Schema(t)
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()

	s, err := bgtaskriver.NewStore(pool, "")
	require.NoError(t, err)
	require.NoError(t, s.Migrate(ctx))
	id := uuid.New()
	require.NoError(t, s.Apply(ctx, map[uuid.UUID][]byte{id: record(1)}, nil))
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+table(schema)).Scan(&n))
	assert.Equal(t, 1, n, "the record is in %s", schema)
}

func TestNewStoreRefusesBadArguments(t *testing.T) {
	t.Parallel()
	_, err := bgtaskriver.NewStore(nil, "")
	assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	pool, err := pgxpool.New(t.Context(), "postgres://127.0.0.1:1/none") // never connects
	require.NoError(t, err)
	defer pool.Close()
	for _, schema := range []string{"1st", "a-b", "a.b", `a"b`, "a b", "é"} {
		_, err := bgtaskriver.NewStore(pool, schema)
		assert.ErrorIs(t, err, bgtask.ErrInvalidArgument, schema)
	}
	for _, schema := range []string{"", "_", "Fleet_2"} {
		_, err := bgtaskriver.NewStore(pool, schema)
		assert.NoError(t, err, schema)
	}
}

func TestZeroStore(t *testing.T) {
	t.Parallel()
	var s bgtaskriver.Store
	_, err := s.Load(t.Context())
	assert.Error(t, err)
	assert.Error(t, s.Apply(t.Context(), map[uuid.UUID][]byte{uuid.New(): record(0)}, nil))
	assert.Error(t, s.Migrate(t.Context()))
}

func TestStoreContextDone(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	id := uuid.New()
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel := context.WithDeadline(t.Context(), time.Unix(0, 0))
	defer cancel()
	for ctx, want := range map[context.Context]error{canceled: context.Canceled, expired: context.DeadlineExceeded} {
		_, err := s.Load(ctx)
		assert.Equal(t, want, err)
		assert.Equal(t, want, s.Apply(ctx, map[uuid.UUID][]byte{id: record(0)}, nil))
	}
	got, err := s.Load(t.Context())
	require.NoError(t, err)
	assert.Empty(t, got, "nothing written")
}

func TestStoreMissingTable(t *testing.T) {
	t.Parallel()
	pool, schema := pgtest.Schema(t)
	s, err := bgtaskriver.NewStore(pool, schema)
	require.NoError(t, err)
	_, err = s.Load(t.Context())
	require.Error(t, err)
	assert.NotErrorIs(t, err, bgtask.ErrStoreCorrupt, "nothing to read is not a damaged store")
	assert.ErrorContains(t, err, "no such table (Store.Migrate creates it)")
}

// TestStoreCorrupt damages the table, or makes one of another shape: Load fails with an
// error matching ErrStoreCorrupt that says what is wrong, and writes nothing.
func TestStoreCorrupt(t *testing.T) {
	t.Parallel()
	id := uuid.MustParse("0b8c2f6e-7d1a-4c1e-9d0a-3f5e6a7b8c9d")
	for name, c := range map[string]struct {
		damage string // the SQL: %[1]s is the table
		want   string // in the error
	}{
		"a NULL record": {
			`ALTER TABLE %[1]s ALTER COLUMN record DROP NOT NULL; INSERT INTO %[1]s (task_id, record) VALUES ('` + id.String() + `', NULL)`,
			"the record of " + id.String() + " is NULL",
		},
		"another table's columns": {
			`DROP TABLE %[1]s; CREATE TABLE %[1]s (id uuid PRIMARY KEY, data bytea)`,
			"not a bgtaskriver table",
		},
		"a column of another type": {
			`DROP TABLE %[1]s; CREATE TABLE %[1]s (task_id text PRIMARY KEY, record bytea); INSERT INTO %[1]s VALUES ('not a uuid', 'x')`,
			"reading a row",
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, pool, schema := newStore(t)
			exec(t, pool, fmt.Sprintf(c.damage, table(schema)))
			_, err := s.Load(t.Context())
			require.ErrorIs(t, err, bgtask.ErrStoreCorrupt)
			assert.ErrorContains(t, err, "bgtaskriver: "+schema+".bgtask_registration: store corrupt: ")
			assert.ErrorContains(t, err, c.want)
			t.Log(err)
		})
	}
}

// countingTask returns a task that returns an error naming its run, counting from 1.
func countingTask() bgtask.BackgroundTask {
	var runs sync.Mutex
	n := 0
	return bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
		inst.SetProgress(40)
		runs.Lock()
		defer runs.Unlock()
		n++
		return fmt.Errorf("run %d failed", n)
	})
}

// TestStoreRestoresRegistrationsInANewHost registers persistent registrations in one host,
// and restores them in a second host on a new store over the same table, as a replica
// that starts later, or the same program after a restart, does.
func TestStoreRestoresRegistrationsInANewHost(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s1, pool, schema := newStore(t)
	upload := countingTask()
	builders := func() []bgtask.Builder { // sorted by name, as AllTasks lists them
		return []bgtask.Builder{
			{Name: "tick", TaskEntryPoint: "tick", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}},
			{Name: "upload", TaskEntryPoint: "upload", Trigger: bgtask.NewApplicationTrigger(), MaxExecutionTime: time.Minute},
		}
	}
	noop := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })

	h1, err := bgtask.NewHost(bgtask.WithStore(s1), bgtask.WithEntryPoint("tick", noop), bgtask.WithEntryPoint("upload", upload))
	require.NoError(t, err)
	var regs []*bgtask.Registration
	for _, b := range builders() {
		r, err := h1.Ensure(b)
		require.NoError(t, err)
		regs = append(regs, r)
	}
	recs, err := s1.Load(ctx)
	require.NoError(t, err)
	assert.Len(t, recs, 2, "stored before Ensure returned")
	first, res, err := regs[1].Trigger().(*bgtask.ApplicationTrigger).RequestAndWait(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, bgtask.Allowed, res)
	require.EqualError(t, first.Err, "run 1 failed")
	next, ok := regs[0].NextFire()
	require.True(t, ok)
	require.NoError(t, h1.Shutdown(ctx)) // writes the result

	s2, err := bgtaskriver.NewStore(pool, schema)
	require.NoError(t, err)
	h2, err := bgtask.NewHost(bgtask.WithStore(s2), bgtask.WithEntryPoint("tick", noop), bgtask.WithEntryPoint("upload", upload))
	require.NoError(t, err)
	defer func() { assert.NoError(t, h2.Shutdown(context.Background())) }()
	restored := h2.AllTasks()
	require.Len(t, restored, 2)
	for k, r := range restored {
		assert.Equal(t, regs[k].TaskID(), r.TaskID())
		assert.Equal(t, regs[k].Name(), r.Name())
	}
	assert.Equal(t, &bgtask.TimeTrigger{FreshnessTime: time.Hour}, restored[0].Trigger())
	restoredNext, ok := restored[0].NextFire()
	require.True(t, ok)
	assert.WithinDuration(t, next, restoredNext, time.Millisecond, "the countdown goes on")
	last, ok := restored[1].LastResult()
	require.True(t, ok)
	assert.Equal(t, first.InstanceID, last.InstanceID)
	assert.EqualError(t, last.Err, "run 1 failed")
	assert.Equal(t, uint32(40), last.Progress)

	// Ensure finds them; the restored trigger fires the task.
	for k, b := range builders() {
		r, err := h2.Ensure(b)
		require.NoError(t, err)
		assert.Same(t, restored[k], r, b.Name)
	}
	again, res, err := restored[1].Trigger().(*bgtask.ApplicationTrigger).RequestAndWait(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, bgtask.Allowed, res)
	assert.EqualError(t, again.Err, "run 2 failed")

	// Unregister deletes the record before it returns.
	restored[0].Unregister(false)
	recs, err = s2.Load(ctx)
	require.NoError(t, err)
	assert.NotContains(t, recs, restored[0].TaskID())
	assert.Contains(t, recs, restored[1].TaskID())
}

// TestStoreCorruptRecordFailsNewHost: a record the host cannot decode makes NewHost fail
// with ErrStoreCorrupt.
func TestStoreCorruptRecordFailsNewHost(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	id := uuid.New()
	require.NoError(t, s.Apply(t.Context(), map[uuid.UUID][]byte{id: []byte("not a record")}, nil))
	_, err := bgtask.NewHost(bgtask.WithStore(s))
	require.ErrorIs(t, err, bgtask.ErrStoreCorrupt)
	assert.ErrorContains(t, err, id.String())
}

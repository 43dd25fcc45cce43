package bgtaskriver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"

	"github.com/bgtask-go/bgtask"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// tableName is the store's table, in the schema given to NewStore.
const tableName = "bgtask_registration"

// schemaRE is what River's Config.Schema accepts: NewStore refuses the schemas that a
// River client would, so that the store and River's tables always share one.
var schemaRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// Postgres error codes that the store tells apart.
const (
	codeUndefinedTable  = "42P01"
	codeUndefinedColumn = "42703"
)

var _ bgtask.Store = (*Store)(nil)

// Store is a [bgtask.Store] in the Postgres table bgtask_registration (see the package doc).
// It is safe for concurrent use, by one host or by the hosts of several processes on the
// same table. Get one from [NewStore]; the zero Store is not usable (its methods return
// an error).
type Store struct {
	pool  *pgxpool.Pool
	table string // the table's name for SQL: quoted, in its schema if one was given
	name  string // the table's name for errors: schema.bgtask_registration

	load, upsert, remove string // the SQL of Load and Apply
	exists               string // the SQL of has
}

// NewStore returns a store in the table bgtask_registration of schema, on pool. Give it the
// schema of the fleet's River client (River's Config.Schema); an empty schema, like
// River's default, names the table without one, so that Postgres finds it on the
// connections' search_path. A nil pool, or a schema that River would refuse, is an error
// wrapping [bgtask.ErrInvalidArgument].
//
// NewStore does not connect: [Store.Migrate] creates the table. The store never closes
// the pool.
func NewStore(pool *pgxpool.Pool, schema string) (*Store, error) {
	switch {
	case pool == nil:
		return nil, fmt.Errorf("bgtaskriver: NewStore: nil pool: %w", bgtask.ErrInvalidArgument)
	case schema != "" && !schemaRE.MatchString(schema):
		return nil, fmt.Errorf("bgtaskriver: NewStore: schema %q: only letters, digits and underscores, not starting with a digit: %w",
			schema, bgtask.ErrInvalidArgument)
	}
	table, name := qualified(schema, tableName), tableName
	if schema != "" {
		name = schema + "." + tableName
	}
	return &Store{
		pool:  pool,
		table: table,
		name:  name,
		load:  "SELECT task_id, record FROM " + table,
		// One statement for all the puts, whatever their number: the records come as two
		// arrays that unnest pairs up again.
		upsert: "INSERT INTO " + table + " (task_id, record, updated_at)" +
			" SELECT id, rec, now() FROM unnest($1::uuid[], $2::bytea[]) AS put(id, rec)" +
			" ON CONFLICT (task_id) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
		remove: "DELETE FROM " + table + " WHERE task_id = ANY($1::uuid[])",
		exists: "SELECT EXISTS (SELECT 1 FROM " + table + " WHERE task_id = $1)",
	}, nil
}

// qualified returns table, in schema if one is given, quoted for SQL as River quotes its
// schema, so that both name the same one whatever its case.
func qualified(schema, table string) string {
	if schema == "" {
		return pgx.Identifier{table}.Sanitize()
	}
	return pgx.Identifier{schema, table}.Sanitize()
}

// errZero is what the methods of the zero Store return.
var errZero = errors.New("bgtaskriver: Store not made by NewStore")

// Migrate creates the store's table if it does not exist; the schema must exist (River's
// migrations create theirs). It is idempotent, and safe to call from several processes at
// once, as every replica of a program may when it starts. It does not change a table that
// exists: one of another shape makes Load fail with an error matching
// [bgtask.ErrStoreCorrupt].
func (s *Store) Migrate(ctx context.Context) error {
	if s.pool == nil {
		return errZero
	}
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return s.migrateTx(ctx, tx) }); err != nil {
		return fmt.Errorf("bgtaskriver: creating %s: %w", s.name, err)
	}
	return nil
}

// migrateTx creates the store's table in tx, if it does not exist. It first takes a
// transaction lock on the table's name, which it holds until tx ends: CREATE TABLE IF NOT
// EXISTS is not safe against itself (two at once can both find no table, and the second
// then fails on a unique index of the catalog), so migrations take turns.
func (s *Store) migrateTx(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "bgtaskriver.migrate "+s.table); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+s.table+" ("+
		"task_id uuid PRIMARY KEY, "+
		"record bytea NOT NULL, "+
		"updated_at timestamptz NOT NULL DEFAULT now())")
	return err
}

// has reports whether the table holds a record for id: whether some replica has the
// registration, as far as the fleet knows.
func (s *Store) has(ctx context.Context, id uuid.UUID) (bool, error) {
	var found bool
	err := s.pool.QueryRow(ctx, s.exists, id).Scan(&found)
	return found, err
}

// Load returns every record in the table. A row it cannot read (a NULL record, a column
// of another type) or a table without the store's columns makes it fail with an error
// matching [bgtask.ErrStoreCorrupt] that names the table and the problem. Load returns
// ctx.Err() if ctx is done before it starts, and an error if ctx ends while it reads. It
// sees the Applies that returned before it started, of every process, and none that
// started after.
func (s *Store) Load(ctx context.Context) (map[uuid.UUID][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.pool == nil {
		return nil, errZero
	}
	rows, err := s.pool.Query(ctx, s.load)
	if err != nil {
		return nil, s.loadError(err)
	}
	defer rows.Close()
	recs := make(map[uuid.UUID][]byte)
	for rows.Next() {
		var id uuid.UUID
		var rec []byte // a copy: pgx does not reuse it
		if err := rows.Scan(&id, &rec); err != nil {
			if errors.As(err, new(pgx.ScanArgError)) {
				return nil, corrupt(s.name, "reading a row: %w", err)
			}
			return nil, s.loadError(err)
		}
		if rec == nil {
			return nil, corrupt(s.name, "the record of %s is NULL", id)
		}
		recs[id] = rec
	}
	if err := rows.Err(); err != nil {
		return nil, s.loadError(err)
	}
	return recs, nil
}

// loadError wraps an error of Load's query: a table without the store's columns is
// corrupt; a missing table is named as such.
func (s *Store) loadError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case codeUndefinedColumn:
			return corrupt(s.name, "not a bgtaskriver table: %w", err)
		case codeUndefinedTable:
			return fmt.Errorf("bgtaskriver: loading %s: no such table (Store.Migrate creates it): %w", s.name, err)
		}
	}
	return fmt.Errorf("bgtaskriver: loading %s: %w", s.name, err)
}

// Apply writes put and deletes del in one transaction, and returns once it has committed: all
// of them are durable, or none. A TaskID in both put and del is deleted; a nil record is
// written as an empty one. Apply with nothing to put or delete returns nil without a round
// trip. A transaction that Postgres ends because it deadlocked with another replica's is tried
// again, up to 5 times in all: each such try waits Postgres's deadlock_timeout (1 s by
// default) before it is ended. It returns ctx.Err() if ctx is done before it starts; if ctx
// ends while it runs, it returns an error and the transaction may have committed or not
// (writing the same again is harmless). It reads put and del until it returns; the caller must
// not change them meanwhile.
func (s *Store) Apply(ctx context.Context, put map[uuid.UUID][]byte, del []uuid.UUID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.pool == nil {
		return errZero
	}
	if len(put) == 0 && len(del) == 0 {
		return nil
	}
	var err error
	for try := 1; try <= maxApplyTries; try++ {
		if err = s.pool.SendBatch(ctx, s.batch(put, del)).Close(); !isDeadlock(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("bgtaskriver: writing %s: %w", s.name, err)
	}
	return nil
}

// maxApplyTries bounds the tries of one Apply that Postgres ends as a deadlock. Postgres
// ends one transaction of a deadlock and lets the others go on, so that one more try
// almost always succeeds; the bound keeps a pathological workload from looping forever.
const maxApplyTries = 5

// isDeadlock reports whether err is Postgres ending a transaction that deadlocked. Such a
// transaction was rolled back as a whole: it can be tried again.
func isDeadlock(err error) bool { return pgCode(err) == codeDeadlock }

// batch returns Apply's statements for put and del. Both go in one batch: pgx sends it in
// one round trip, and Postgres runs a batch's statements in one implicit transaction
// (pgx's Conn.SendBatch): an error in either rolls both back. The deletes come second, so
// that they win over the puts. Each statement locks its rows in the order of its TaskIDs,
// sorted, so that the writes of several replicas, which write the same records (the
// countdowns of time triggers), lock them in one order. A put and a delete of two
// records, in two replicas at once, lock in two statements, and may still deadlock:
// Postgres ends one of the two transactions after its deadlock_timeout (1 s by default),
// and Apply tries that one again.
func (s *Store) batch(put map[uuid.UUID][]byte, del []uuid.UUID) *pgx.Batch {
	b := new(pgx.Batch)
	if len(put) > 0 {
		ids := slices.SortedFunc(maps.Keys(put), compareIDs)
		recs := make([][]byte, len(ids))
		for k, id := range ids {
			recs[k] = put[id]
			if recs[k] == nil {
				recs[k] = []byte{} // nil would be a NULL, which the table refuses
			}
		}
		b.Queue(s.upsert, ids, recs)
	}
	if len(del) > 0 {
		b.Queue(s.remove, slices.SortedFunc(slices.Values(del), compareIDs))
	}
	return b
}

// compareIDs orders TaskIDs by their bytes.
func compareIDs(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }

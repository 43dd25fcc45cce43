// Package pgtest gives tests a Postgres database: the one TEST_DATABASE_URL names or,
// when it is unset, a throwaway server started from the Postgres binaries installed on the
// machine, the first time a test asks for it. Each test gets a schema of its own, with
// River's tables migrated, so that tests run in parallel on one database.
//
// A package that uses it wraps its TestMain, so that the server it started is stopped
// after the tests:
//
//	func TestMain(m *testing.M) {
//		goleak.VerifyTestMain(pgtest.Wrap(m))
//	}
//
// Without a database (no TEST_DATABASE_URL and no binaries), the tests that ask for one
// skip, unless CI is "true", where they fail.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// EnvURL names the environment variable with the URL of a database to test on. The tests
// create their schemas in it and drop them when they end.
const EnvURL = "TEST_DATABASE_URL"

// poolMaxConns is the size of a test's pool. A River client holds one connection for
// LISTEN and uses more to fetch, complete and elect; pgxpool's default, 4 on two cores,
// makes a test with two clients wait for connections.
const poolMaxConns = 16

// errNoPostgres is why there is no database: the tests skip, or fail under CI=true.
var errNoPostgres = errors.New("pgtest: no Postgres: set " + EnvURL + ", or install the Postgres server binaries (initdb, pg_ctl)")

// db is the database of this test binary, set up by the first test that asks for it.
var db struct {
	once   sync.Once
	url    string
	err    error
	server *server // nil when EnvURL names the database
}

// Wrap returns m with a Run that runs the tests and then stops the server this package
// started, if any: pass it to goleak.VerifyTestMain.
func Wrap(m *testing.M) interface{ Run() int } {
	return wrapped{m}
}

type wrapped struct{ m *testing.M }

func (w wrapped) Run() int {
	code := w.m.Run()
	if db.server != nil {
		if err := db.server.stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// URL returns the URL of the test database, starting the server on the first call. Without
// Postgres it skips tb, or fails it when CI is "true". A test that connects to the URL
// itself must leave the tables of other tests alone: Schema gives it its own.
func URL(tb testing.TB) string {
	tb.Helper()
	db.once.Do(func() {
		if db.url = os.Getenv(EnvURL); db.url != "" {
			return
		}
		db.server, db.err = start()
		if db.server != nil {
			db.url = db.server.url
		}
	})
	switch {
	case db.err == nil:
		return db.url
	case errors.Is(db.err, errNoPostgres) && os.Getenv("CI") != "true":
		tb.Skip(db.err)
	default:
		tb.Fatal(db.err)
	}
	return ""
}

// Schema gives tb a new schema in the test database, with River's tables migrated into
// it, and a pool on the database. When tb ends, it drops the schema and closes the pool:
// stop the River clients on the pool in a Cleanup registered after Schema returns (Cleanup
// runs the last registered first). The pool's connections keep the server's search_path,
// so code under test must name the schema, as River's Config.Schema does.
func Schema(tb testing.TB) (*pgxpool.Pool, string) {
	tb.Helper()
	url := URL(tb)
	// Not tb.Context: it is canceled before the Cleanup that drops the schema runs.
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("pgtest: %s: %v", EnvURL, err)
	}
	cfg.MaxConns = poolMaxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	schema := "test_" + randomHex(6)
	quoted := pgx.Identifier{schema}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+quoted); err != nil {
		pool.Close()
		tb.Fatalf("pgtest: creating schema %s: %v", schema, err)
	}
	tb.Cleanup(func() {
		defer pool.Close()
		if _, err := pool.Exec(ctx, "DROP SCHEMA "+quoted+" CASCADE"); err != nil {
			tb.Errorf("pgtest: dropping schema %s: %v", schema, err)
		}
	})
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: schema})
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		tb.Fatalf("pgtest: migrating River into %s: %v", schema, err)
	}
	return pool, schema
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

package pgtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(Wrap(m))
}

// tables returns the tables of schema.
func tables(t *testing.T, pool *pgxpool.Pool, schema string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		"SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name", schema)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

func TestSchemaHasRiversTablesAndIsDroppedAtTheEnd(t *testing.T) {
	var pool *pgxpool.Pool
	var first, second string
	t.Run("test", func(t *testing.T) {
		pool, first = Schema(t)
		assert.Contains(t, tables(t, pool, first), "river_job")
		var other *pgxpool.Pool
		other, second = Schema(t)
		assert.NotEqual(t, first, second, "one schema each")
		assert.Contains(t, tables(t, other, second), "river_job")
	})
	// The pools are closed: look from a new one.
	check, err := pgxpool.New(context.Background(), URL(t))
	require.NoError(t, err)
	defer check.Close()
	for _, schema := range []string{first, second} {
		var n int
		require.NoError(t, check.QueryRow(context.Background(),
			"SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema).Scan(&n))
		assert.Zero(t, n, "schema %s dropped", schema)
	}
	assert.Error(t, pool.Ping(context.Background()), "the pool is closed")
}

func TestSchemasInParallel(t *testing.T) {
	for range 4 {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			pool, schema := Schema(t)
			_, err := pool.Exec(context.Background(), "CREATE TABLE "+pgx.Identifier{schema, "t"}.Sanitize()+" (x int)")
			require.NoError(t, err)
		})
	}
}

// childEnv marks the process that TestURLWithoutPostgres starts.
const childEnv = "PGTEST_TEST_CHILD"

// TestURLWithoutPostgres runs TestURLChild in a process that finds no Postgres: its test
// skips, but fails when CI is "true".
func TestURLWithoutPostgres(t *testing.T) {
	for _, c := range []struct {
		ci   string
		fail bool
	}{{"", false}, {"false", false}, {"true", true}} {
		t.Run("CI="+c.ci, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestURLChild$", "-test.v", "-test.count=1")
			cmd.Env = []string{childEnv + "=1", "PATH=" + t.TempDir(), "CI=" + c.ci,
				"GORACE=atexit_sleep_ms=0"} // with -race, exit at once
			out, err := cmd.CombinedOutput()
			assert.Contains(t, string(out), "pgtest: no Postgres: set TEST_DATABASE_URL")
			assert.NotContains(t, string(out), "URL returned")
			if c.fail {
				assert.Error(t, err, "%s", out)
				assert.Contains(t, string(out), "--- FAIL: TestURLChild")
			} else {
				assert.NoError(t, err, "%s", out)
				assert.Contains(t, string(out), "--- SKIP: TestURLChild")
			}
		})
	}
}

// TestURLChild is the test of the process that TestURLWithoutPostgres starts.
func TestURLChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("run by TestURLWithoutPostgres")
	}
	libGlob = filepath.Join(t.TempDir(), "*", "bin")
	URL(t)
	t.Log("URL returned")
}

package bgtaskriver

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A put and a delete of two records, in two transactions at once, can deadlock: each of
// Apply's statements locks its rows in its own order. Postgres ends one of the two
// transactions; when it is Apply's, Apply tries again, and its caller never sees it.
func TestStoreApplyTriesAgainAfterADeadlock(t *testing.T) {
	f, _ := migratedFleet(t)
	s, ctx := f.store, t.Context()
	a, b := uuid.UUID{1}, uuid.UUID{2}
	require.NoError(t, s.Apply(ctx, map[uuid.UUID][]byte{a: []byte("a1"), b: []byte("b1")}, nil))

	// The other transaction locks b's row, then, once Apply has locked a's (its put) and
	// waits for b's (its delete), a's. Apply waited first, so that Postgres's check for
	// deadlocks, a deadlock_timeout after a wait began, finds this one in Apply's
	// transaction and ends that one.
	other, err := f.pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: "BEGIN; SET LOCAL lock_timeout = '15s'"})
	require.NoError(t, err)
	defer func() { _ = other.Rollback(context.Background()) }()
	_, err = other.Exec(ctx, "SELECT 1 FROM "+s.table+" WHERE task_id = $1 FOR UPDATE", b)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Apply(context.Background(), map[uuid.UUID][]byte{a: []byte("a2")}, []uuid.UUID{b}) }()
	awaitLockWait(t, f.pool, other, tableName)
	_, err = other.Exec(ctx, "SELECT 1 FROM "+s.table+" WHERE task_id = $1 FOR UPDATE", a)
	require.NoError(t, err, "Postgres ended the other transaction, not Apply's")
	require.NoError(t, other.Commit(ctx))
	select {
	case err := <-done:
		require.NoError(t, err, "Apply tried again")
	case <-time.After(waitLong):
		t.Fatal("Apply did not return")
	}
	recs, err := s.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[uuid.UUID][]byte{a: []byte("a2")}, recs)
}

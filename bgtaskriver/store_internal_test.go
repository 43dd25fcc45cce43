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
	for range 5 {
		if applyInADeadlock(t, f.store) {
			return
		}
	}
	t.Fatal("Postgres never ended Apply's transaction")
}

// applyInADeadlock builds the deadlock, and reports whether Postgres ended Apply's
// transaction rather than the other one: Postgres looks for a deadlock a
// deadlock_timeout after a wait began, and ends the transaction whose look finds it,
// which is usually Apply's, as it waited first.
func applyInADeadlock(t *testing.T, s *Store) (endedApplys bool) {
	ctx := t.Context()
	a, b := uuid.UUID{1}, uuid.UUID{2}
	require.NoError(t, s.Apply(ctx, map[uuid.UUID][]byte{a: []byte("a1"), b: []byte("b1")}, nil))
	// The other transaction locks b's row, then, once Apply has locked a's (its put) and
	// waits for b's (its delete), a's.
	other, err := s.pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: "BEGIN; SET LOCAL lock_timeout = '15s'"})
	require.NoError(t, err)
	defer func() { _ = other.Rollback(context.Background()) }()
	_, err = other.Exec(ctx, "SELECT 1 FROM "+s.table+" WHERE task_id = $1 FOR UPDATE", b)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Apply(context.Background(), map[uuid.UUID][]byte{a: []byte("a2")}, []uuid.UUID{b}) }()
	awaitLockWait(t, s.pool, other, tableName)
	_, err = other.Exec(ctx, "SELECT 1 FROM "+s.table+" WHERE task_id = $1 FOR UPDATE", a)
	if isDeadlock(err) { // Postgres ended the other one: Apply goes on, with nothing to try again
		require.NoError(t, other.Rollback(ctx))
		require.NoError(t, receiveWithin(t, done))
		return false
	}
	require.NoError(t, err)
	require.NoError(t, other.Commit(ctx))
	require.NoError(t, receiveWithin(t, done), "Apply tried again")
	recs, err := s.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[uuid.UUID][]byte{a: []byte("a2")}, recs)
	return true
}

// receiveWithin returns the value of c, and fails t if none comes within waitLong.
func receiveWithin[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(waitLong):
	}
	t.Fatal("nothing came")
	return *new(T)
}

package bgtaskriver

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// The group insert: fires dispatched at the same time, by Requests on many goroutines or
// as the time fires a host hands over together, go into River in one InsertMany, as a
// database's group commit does. One of the waiting goroutines, the leader, inserts
// everything queued when it starts, while the next fires queue up behind it; when its
// insert returns, the leader hands the lead to the first of those, which inserts them
// all in the next round trip. Alone, a fire is inserted at once: it leads a batch of one.
// BenchmarkFleetThroughput, 20,000 fires from 1,000 goroutines on two cores: 8,300–9,000
// fires/s grouped, 900–1,100 with one InsertMany per fire (maxBatch 1).

// maxBatch bounds the jobs of one InsertMany, so that one statement stays of a reasonable
// size; what is queued beyond waits for the next round trip.
const maxBatch = 1000

// inserter groups the inserts of concurrent fires (see above). Its zero value, with a
// client and its pool, is ready for use; it is safe for concurrent use.
type inserter struct {
	client *river.Client[pgx.Tx]
	pool   *pgxpool.Pool

	mu      sync.Mutex
	queue   []*insertion // waiting for the next batch, oldest first
	leading bool         // a leader is inserting
}

// insertion is one fire's job on its way in.
type insertion struct {
	params river.InsertManyParams
	key    jobKey // what River's unique key is made of

	// Set before done is signaled, by the leader that inserted it, or read by the
	// goroutine that was handed the lead.
	res  *rivertype.JobInsertResult
	err  error
	lead bool
	done chan struct{} // buffered 1: signaled when given the lead, and when inserted
}

// insert inserts x's job, and returns River's answer or the error of the batch it went in.
// It blocks for the insert, ctx or not: the batch is shared, and one fire's ctx must not
// cancel the others'. The insert keeps ctx's values.
func (in *inserter) insert(ctx context.Context, x *insertion) (*rivertype.JobInsertResult, error) {
	in.mu.Lock()
	in.queue = append(in.queue, x)
	follow := in.leading
	in.leading = true
	in.mu.Unlock()
	if follow {
		<-x.done
		if !x.lead {
			return x.res, x.err
		}
	}
	ctx = context.WithoutCancel(ctx)
	for x.res == nil && x.err == nil {
		in.insertBatch(ctx)
	}
	in.handOver()
	return x.res, x.err
}

// insertBatch inserts up to maxBatch of the queued jobs in one InsertMany, and wakes those
// that wait for them (the leader's own is among them, or in a later batch).
func (in *inserter) insertBatch(ctx context.Context) {
	in.mu.Lock()
	n := min(len(in.queue), maxBatch)
	batch := in.queue[:n:n]
	in.queue = in.queue[n:]
	in.mu.Unlock()

	// Jobs with the same unique key in one InsertMany would make Postgres refuse it (ON
	// CONFLICT cannot update one row twice): the first goes in, and the others get its
	// row, as duplicates.
	first := make(map[jobKey]*insertion, len(batch))
	var firsts []*insertion
	for _, x := range batch {
		if _, seen := first[x.key]; !seen {
			first[x.key] = x
			firsts = append(firsts, x)
		}
	}
	results, err := in.insertMany(ctx, firsts)
	for k, x := range firsts {
		if x.err = err; err == nil {
			x.res = results[k]
		}
	}
	for _, x := range batch {
		if y := first[x.key]; y != x {
			x.err = y.err
			if y.res != nil {
				x.res = &rivertype.JobInsertResult{Job: y.res.Job, UniqueSkippedAsDuplicate: true}
			}
		}
		x.done <- struct{}{}
	}
}

// Postgres error codes after which a batch is inserted again.
const (
	codeDeadlock             = "40P01"
	codeSerializationFailure = "40001"
	codeLockNotAvailable     = "55P03" // lock_timeout passed
)

// maxInsertTries bounds the tries of one batch: all but the last wait at most 100 ms for
// a lock (beginInsert), about 2 s in all; the last waits as long as it must, as River's
// InsertMany would, so that a batch held by a long transaction still goes in.
const maxInsertTries = 20

// beginInsert begins the transaction of a batch, in one round trip (River's InsertMany
// would begin one too), with 100 ms as the longest wait for a lock (see insertMany).
const beginInsert = "BEGIN; SET LOCAL lock_timeout = '100ms'"

// insertMany inserts the jobs of xs, whose unique keys differ, and returns River's answers
// in their order. It sorts xs by unique key first: a job that conflicts with one queued or
// running locks that job's row (River's ON CONFLICT DO UPDATE), and the batches of every
// replica, sorted alike, lock in the same order, so that two of them cannot deadlock.
//
// River's completer, which updates the rows of the jobs that ended in batches of its own,
// in another order, can: every replica inserts every time of a time trigger's grid, so
// that the batches of all but the first are duplicates, which lock the rows of jobs that
// may have just run. Postgres would end such a deadlock after its deadlock_timeout (1 s by
// default), and River's completer, if it was the one aborted, waits as long again; the
// jobs stay running meanwhile, and the next times of their registrations wait for them.
// With 3 replicas of 200 time triggers due every second, 83–818 times of 1,200 were then
// coalesced into later ones. So a batch waits at most 100 ms for a lock (lock_timeout):
// it then gives way, and is inserted again (see maxInsertTries). With this, and the
// store's writes sorted (Store.Apply), no time was coalesced in 8 runs of that test.
func (in *inserter) insertMany(ctx context.Context, xs []*insertion) ([]*rivertype.JobInsertResult, error) {
	slices.SortFunc(xs, func(a, b *insertion) int { return a.key.compare(b.key) })
	params := make([]river.InsertManyParams, len(xs))
	for k, x := range xs {
		params[k] = x.params
	}
	for try := 1; ; try++ {
		begin := pgx.TxOptions{BeginQuery: beginInsert}
		if try == maxInsertTries {
			begin = pgx.TxOptions{}
		}
		var results []*rivertype.JobInsertResult
		err := pgx.BeginTxFunc(ctx, in.pool, begin, func(tx pgx.Tx) error {
			var err error
			results, err = in.client.InsertManyTx(ctx, tx, params)
			return err
		})
		if try == maxInsertTries || !retryable(err) {
			return results, err
		}
	}
}

// retryable reports whether err ends a transaction that may succeed when tried again.
func retryable(err error) bool {
	switch pgCode(err) {
	case codeDeadlock, codeSerializationFailure, codeLockNotAvailable:
		return true
	}
	return false
}

// pgCode returns the Postgres error code of err, or "" when err is not Postgres's.
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// handOver gives the lead to the oldest queued job's goroutine, or ends the lead when
// nothing is queued.
func (in *inserter) handOver() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.queue) == 0 {
		in.leading = false
		return
	}
	next := in.queue[0]
	next.lead = true
	next.done <- struct{}{}
}

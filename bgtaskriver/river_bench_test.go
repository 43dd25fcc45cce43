package bgtaskriver_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask/bgtaskriver/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// The baselines: bare River on the test database, with tuned fetch settings and trivial
// jobs. The helpers take "run jobs this way" funcs, so that other ways of running jobs on
// River are measured by the same code, in the same run, on the same database.

// Tuned fetch settings. River's defaults (FetchCooldown 100 ms, FetchPollInterval 1 s)
// spare the database at the cost of latency: the cooldown also spaces the notifications
// of inserts that a client sends (one per queue and cooldown), so a job inserted within a
// cooldown of the last notification waits for a fetch that something else starts, at the
// latest the next poll.
const (
	// fetchCooldown is River's minimum (FetchCooldownMin).
	fetchCooldown = time.Millisecond
	// fetchPollInterval bounds the wait of a job inserted without a notification. With
	// 50 ms, one job in twenty waited for the poll in BenchmarkRiverInsertToWork (p95
	// 39 ms, against 3.2 ms with 10 ms), for the same median.
	fetchPollInterval = 10 * time.Millisecond
	// maxWorkers bounds the jobs running at once, and so the jobs one fetch locks.
	// BenchmarkRiverThroughput, 20,000 jobs on two cores, two runs: 100 workers
	// 12,300–13,000 jobs/s, 500 16,200–16,400, 1,000 14,200–15,400.
	maxWorkers = 500
	// insertBatch is how many jobs one InsertMany inserts in the throughput benchmarks,
	// and how many a throughput benchmark runs before measuring.
	insertBatch = 1000
	// warmUp is how many round trips the latency benchmarks make before measuring, while
	// the client elects a leader and the pool opens its connections.
	warmUp = 20
)

// benchArgs is a trivial job.
type benchArgs struct{}

func (benchArgs) Kind() string { return "bench" }

// startRiver starts a River client that works benchArgs jobs with work, on a schema of its
// own, with the tuned fetch settings, and stops it when b ends. It returns the client, and
// the database and schema for the benchmark's other clients.
func startRiver(b *testing.B, work river.Worker[benchArgs]) (*river.Client[pgx.Tx], *riverDB) {
	b.Helper()
	pool, schema := pgtest.Schema(b)
	db := &riverDB{driver: riverpgxv5.New(pool), schema: schema}
	workers := river.NewWorkers()
	river.AddWorker(workers, work)
	cfg := db.config()
	cfg.Workers = workers
	cfg.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: maxWorkers}}
	client, err := river.NewClient(db.driver, cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := client.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := client.Stop(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return client, db
}

// riverDB is the database and schema of a benchmark's clients.
type riverDB struct {
	driver *riverpgxv5.Driver
	schema string
}

// config returns the settings common to the benchmark's clients. River logs a warning for
// each job canceled remotely; the benchmarks discard its log.
func (db *riverDB) config() *river.Config {
	return &river.Config{
		Schema:            db.schema,
		FetchCooldown:     fetchCooldown,
		FetchPollInterval: fetchPollInterval,
		Logger:            slog.New(slog.DiscardHandler),
		TestOnly:          true, // starts the leader's maintenance services without a random delay
	}
}

// insertOnly returns a client of db that inserts and cancels jobs but works none: another
// replica, as far as the working client can tell.
func (db *riverDB) insertOnly(b *testing.B) *river.Client[pgx.Tx] {
	b.Helper()
	client, err := river.NewClient(db.driver, db.config())
	if err != nil {
		b.Fatal(err)
	}
	return client
}

// benchThroughput runs b.N jobs with run, which inserts n jobs and returns once all of
// them have been worked, and reports the jobs per second; ns/op is per job. A first run of
// insertBatch jobs, not measured, warms the client and the pool up.
func benchThroughput(b *testing.B, run func(ctx context.Context, n int) error) {
	b.Helper()
	ctx := b.Context()
	if err := run(ctx, insertBatch); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if err := run(ctx, b.N); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// benchLatency calls one, which runs one job and returns the latency it measured, warmUp
// times, then once per iteration, and reports the 50th, 90th and 99th percentiles of what
// the iterations measured. ns/op is the whole round trip of one call: the mean, tail
// included.
func benchLatency(b *testing.B, one func(ctx context.Context) (time.Duration, error)) {
	b.Helper()
	ctx := b.Context()
	for range warmUp {
		if _, err := one(ctx); err != nil {
			b.Fatal(err)
		}
	}
	samples := make([]time.Duration, 0, 1<<12)
	b.ReportAllocs()
	for b.Loop() {
		d, err := one(ctx)
		if err != nil {
			b.Fatal(err)
		}
		samples = append(samples, d)
	}
	slices.Sort(samples)
	ms := func(q float64) float64 {
		return float64(samples[int(q*float64(len(samples)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.9), "p90-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}

// receive returns the next value of c, or ctx's error.
func receive[T any](ctx context.Context, c <-chan T) (T, error) {
	select {
	case v := <-c:
		return v, nil
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// BenchmarkRiverThroughput inserts trivial jobs with InsertMany, insertBatch at a time,
// while the client works them.
func BenchmarkRiverThroughput(b *testing.B) {
	var left atomic.Int64 // the jobs of this run not yet worked
	worked := make(chan struct{}, 1)
	client, _ := startRiver(b, river.WorkFunc(func(context.Context, *river.Job[benchArgs]) error {
		if left.Add(-1) == 0 {
			worked <- struct{}{}
		}
		return nil
	}))
	benchThroughput(b, func(ctx context.Context, n int) error {
		left.Store(int64(n)) // the jobs of the run before have all been worked
		for sent := 0; sent < n; {
			batch := make([]river.InsertManyParams, min(insertBatch, n-sent))
			for k := range batch {
				batch[k].Args = benchArgs{}
			}
			if _, err := client.InsertMany(ctx, batch); err != nil {
				return err
			}
			sent += len(batch)
		}
		_, err := receive(ctx, worked)
		return err
	})
}

// BenchmarkRiverInsertToWork measures from before Insert to the start of Work, one job at
// a time, on one client.
func BenchmarkRiverInsertToWork(b *testing.B) {
	started := make(chan time.Time, 1)
	client, _ := startRiver(b, river.WorkFunc(func(context.Context, *river.Job[benchArgs]) error {
		started <- time.Now()
		return nil
	}))
	benchLatency(b, func(ctx context.Context) (time.Duration, error) {
		t0 := time.Now()
		if _, err := client.Insert(ctx, benchArgs{}, nil); err != nil {
			return 0, err
		}
		t1, err := receive(ctx, started)
		return t1.Sub(t0), err
	})
}

// BenchmarkRiverJobCancel measures from before JobCancel, called on another client, to the
// moment the running job's context is done, one job at a time.
func BenchmarkRiverJobCancel(b *testing.B) {
	started := make(chan int64, 1)
	done := make(chan time.Time, 1)
	client, db := startRiver(b, river.WorkFunc(func(ctx context.Context, job *river.Job[benchArgs]) error {
		started <- job.ID
		<-ctx.Done()
		done <- time.Now()
		if !errors.Is(context.Cause(ctx), river.ErrJobCancelledRemotely) {
			b.Errorf("job %d: context ended with %v", job.ID, context.Cause(ctx))
		}
		return ctx.Err()
	}))
	other := db.insertOnly(b)
	benchLatency(b, func(ctx context.Context) (time.Duration, error) {
		if _, err := client.Insert(ctx, benchArgs{}, nil); err != nil {
			return 0, err
		}
		id, err := receive(ctx, started)
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		if _, err := other.JobCancel(ctx, id); err != nil {
			return 0, err
		}
		t1, err := receive(ctx, done)
		return t1.Sub(t0), err
	})
}

package bgtaskriver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
	"github.com/bgtask-go/bgtask/bgtaskriver/internal/pgtest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
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
func startRiver[T river.JobArgs](b *testing.B, work river.Worker[T]) (*river.Client[pgx.Tx], *riverDB) {
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
	reportPercentiles(b, samples, 50, 90, 99)
}

// reportPercentiles reports the percentiles pcts of samples, in milliseconds, as "pN-ms",
// and the largest, for 100, as "last-ms".
func reportPercentiles(b *testing.B, samples []time.Duration, pcts ...int) {
	slices.Sort(samples)
	for _, pct := range pcts {
		unit := fmt.Sprintf("p%d-ms", pct)
		if pct == 100 {
			unit = "last-ms"
		}
		b.ReportMetric(float64(samples[pct*(len(samples)-1)/100])/float64(time.Millisecond), unit)
	}
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
	riverThroughput[benchArgs](b, func() river.InsertManyParams { return river.InsertManyParams{Args: benchArgs{}} })
}

// uniqueArgs is a trivial job shaped like a fleet's Request: a registration's TaskID and
// name, unique while queued or running.
type uniqueArgs struct {
	TaskID uuid.UUID `json:"task_id" river:"unique"`
	Name   string    `json:"name"`
}

func (uniqueArgs) Kind() string { return "bench_unique" }

// BenchmarkRiverThroughputUnique is BenchmarkRiverThroughput with jobs that are unique as
// the fleet's Requests are (bgtaskriver's requestUnique), each of a TaskID of its own:
// what River's unique inserts cost, without bgtask.
func BenchmarkRiverThroughputUnique(b *testing.B) {
	opts := &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: []rivertype.JobState{
		rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
		rivertype.JobStateScheduled, rivertype.JobStateRetryable,
	}}}
	riverThroughput[uniqueArgs](b, func() river.InsertManyParams {
		return river.InsertManyParams{Args: uniqueArgs{TaskID: uuid.New(), Name: "r1234"}, InsertOpts: opts}
	})
}

// riverThroughput runs the River throughput benchmarks: jobs made by job, of kind T,
// inserted with InsertMany, insertBatch at a time, while the client works them.
func riverThroughput[T river.JobArgs](b *testing.B, job func() river.InsertManyParams) {
	var left atomic.Int64 // the jobs of this run not yet worked
	worked := make(chan struct{}, 1)
	client, _ := startRiver(b, river.WorkFunc(func(context.Context, *river.Job[T]) error {
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
				batch[k] = job()
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

// The same three measures through bgtaskriver: fires requested on a host whose Fleet runs
// them, with River tuned as above. On two cores, quiet but for Postgres, five runs:
// throughput 0.63–0.70× River's (8,900–11,900 fires/s against 13,900–18,000), where unique
// jobs alone (BenchmarkRiverThroughputUnique) reach 0.72–0.82×: a Request's job must be
// unique while queued or running; the rest is the host's Request and instance and garbage
// collection. Request → Run p50 1.46 ms against Insert → Work 1.59, Fleet.Cancel → context
// done p50 0.45 ms against JobCancel's 0.47.

// benchRequesters is how many goroutines Request at once in BenchmarkFleetThroughput: the
// fleet groups their inserts (insert.go), so it bounds the jobs of one InsertMany.
const benchRequesters = insertBatch

// startFleet starts a replica, with River tuned as above, whose registrations r0, r1, …
// (n of them, each on an ApplicationTrigger of its own) run task. It returns the replica,
// the triggers, and the database for the benchmark's other replicas.
func startFleet(b *testing.B, n int, task bgtask.TaskFunc) (*replica, []*bgtask.ApplicationTrigger, fleetDB) {
	b.Helper()
	db := newFleetDB(b)
	r := db.replica(b, "bench", bgtaskriver.Config{MaxWorkers: maxWorkers, FetchCooldown: fetchCooldown, FetchPollInterval: fetchPollInterval},
		bgtask.WithEntryPoint("bench", task))
	trigs := make([]*bgtask.ApplicationTrigger, n)
	var wg sync.WaitGroup
	for k := range trigs { // concurrently: the host writes the store for several at once
		trigs[k] = bgtask.NewApplicationTrigger()
		wg.Go(func() {
			if _, err := r.host.Register(bgtask.Builder{Name: fmt.Sprint("r", k), TaskEntryPoint: "bench", Trigger: trigs[k]}); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	r.start(b)
	return r, trigs, db
}

// requestOnce Requests trig until it takes the Request, and returns the time just before
// the Request it took. A registration refuses (CurrentlyRunning) while River has not yet
// written the end of its last job, a few milliseconds after its task returned.
func requestOnce(ctx context.Context, trig *bgtask.ApplicationTrigger) (time.Time, error) {
	for {
		t0 := time.Now()
		res, err := trig.Request(ctx, nil)
		if err != nil || res == bgtask.Allowed {
			return t0, err
		}
	}
}

// benchRegistrations is how many registrations BenchmarkFleetThroughput requests in turn.
// A registration takes one Request at a time (its job is unique while queued or
// running), so the benchmark requests one again once River has written the end of its
// last job, as a program's Requests of its many registrations would come.
const benchRegistrations = 4 * insertBatch

// BenchmarkFleetThroughput requests trivial fires from benchRequesters goroutines at once,
// while the replica runs them: the fleet's counterpart of BenchmarkRiverThroughput.
func BenchmarkFleetThroughput(b *testing.B) {
	var left atomic.Int64 // the fires of this run not yet run
	worked := make(chan struct{}, 1)
	r, trigs, _ := startFleet(b, benchRegistrations, func(context.Context, bgtask.BackgroundTaskInstance) error {
		if left.Add(-1) == 0 {
			worked <- struct{}{}
		}
		return nil
	})
	free := make(chan *bgtask.ApplicationTrigger, benchRegistrations) // registrations without a job, in turn
	byTask := make(map[uuid.UUID]*bgtask.ApplicationTrigger, benchRegistrations)
	for _, reg := range r.host.AllTasks() {
		byTask[reg.TaskID()] = reg.Trigger().(*bgtask.ApplicationTrigger)
	}
	for _, trig := range trigs {
		free <- trig
	}
	completed, stop := r.fleet.JobsCompleted(1 << 20)
	freed := make(chan struct{})
	go func() { // until stop closes completed
		defer close(freed)
		for e := range completed {
			var args struct {
				TaskID uuid.UUID `json:"task_id"`
			}
			if err := json.Unmarshal(e.Job.EncodedArgs, &args); err != nil {
				b.Error(err)
			}
			free <- byTask[args.TaskID]
		}
	}()
	defer func() {
		stop()
		<-freed
	}()
	benchThroughput(b, func(ctx context.Context, n int) error {
		left.Store(int64(n))
		var todo atomic.Int64
		todo.Store(int64(n))
		var wg sync.WaitGroup
		for range benchRequesters {
			wg.Go(func() {
				for todo.Add(-1) >= 0 {
					if err := requestFree(ctx, free); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		_, err := receive(ctx, worked)
		return err
	})
}

// requestFree Requests the registrations of free, in turn, until one takes the Request;
// one that refuses goes back to the end.
func requestFree(ctx context.Context, free chan *bgtask.ApplicationTrigger) error {
	for {
		trig := <-free
		res, err := trig.Request(ctx, nil)
		if err != nil || res == bgtask.Allowed {
			return err
		}
		free <- trig
	}
}

// latencyRegistrations is how many registrations the latency benchmarks request in turn.
// River writes the end of jobs that come one at a time every 250 ms (its completer's
// batches), and a registration takes a Request again only then: with a few milliseconds
// per fire, 256 registrations come back to the first well after it.
const latencyRegistrations = 256

// BenchmarkFleetRequestToRun measures from before Request to the start of the task's Run,
// one fire at a time, on one replica: the fleet's counterpart of
// BenchmarkRiverInsertToWork.
func BenchmarkFleetRequestToRun(b *testing.B) {
	started := make(chan time.Time, 1)
	_, trigs, _ := startFleet(b, latencyRegistrations, func(context.Context, bgtask.BackgroundTaskInstance) error {
		started <- time.Now()
		return nil
	})
	k := 0
	benchLatency(b, func(ctx context.Context) (time.Duration, error) {
		k++
		t0, err := requestOnce(ctx, trigs[k%len(trigs)])
		if err != nil {
			return 0, err
		}
		t1, err := receive(ctx, started)
		return t1.Sub(t0), err
	})
}

// BenchmarkFleetCancel measures from before Fleet.Cancel, called on another replica, to the
// moment the running instance's context is done, one fire at a time: the fleet's
// counterpart of BenchmarkRiverJobCancel.
func BenchmarkFleetCancel(b *testing.B) {
	started := make(chan uuid.UUID, 1)
	done := make(chan time.Time, 1)
	_, trigs, db := startFleet(b, latencyRegistrations, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		started <- inst.InstanceID()
		<-ctx.Done()
		done <- time.Now()
		var ce *bgtask.CanceledError
		if !errors.As(context.Cause(ctx), &ce) || ce.Reason != bgtask.Abort {
			b.Errorf("instance %s: context ended with %v", inst.InstanceID(), context.Cause(ctx))
		}
		return nil
	})
	other := db.replica(b, "other", bgtaskriver.Config{}) // not started: it runs nothing
	k := 0
	benchLatency(b, func(ctx context.Context) (time.Duration, error) {
		k++
		if _, err := requestOnce(ctx, trigs[k%len(trigs)]); err != nil {
			return 0, err
		}
		id, err := receive(ctx, started)
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		if err := other.fleet.Cancel(ctx, id); err != nil {
			return 0, err
		}
		t1, err := receive(ctx, done)
		return t1.Sub(t0), err
	})
}

// timeStart is the start of a time fire's instance: its time of the grid, and how late
// after it the instance started.
type timeStart struct {
	at   time.Time
	late time.Duration
}

// burstTriggers is how many time triggers BenchmarkFleetTimeTriggersDueAtOnce has due at
// one instant.
const burstTriggers = 1000

// BenchmarkFleetTimeTriggersDueAtOnce measures how late the instances of burstTriggers time
// triggers of one period start after their time, on one replica, each iteration one time
// of the grid: a fleet's grid starts at the epoch, so every registration of a period
// comes due at the same instant (the hourly ones at the top of each hour).
func BenchmarkFleetTimeTriggersDueAtOnce(b *testing.B) {
	const every = 2 * time.Second
	started := make(chan timeStart, burstTriggers)
	db := newFleetDB(b)
	r := db.replica(b, "bench", bgtaskriver.Config{MaxWorkers: maxWorkers, FetchCooldown: fetchCooldown, FetchPollInterval: fetchPollInterval},
		bgtask.WithEntryPoint("bench", bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			at := inst.TriggerDetails().(*bgtask.TimeTriggerDetails).ScheduledAt
			started <- timeStart{at, time.Since(at)}
			return nil
		})))
	var wg sync.WaitGroup
	for k := range burstTriggers {
		wg.Go(func() {
			if _, err := r.host.Register(bgtask.Builder{Name: fmt.Sprint("r", k), TaskEntryPoint: "bench",
				Trigger: &bgtask.TimeTrigger{FreshnessTime: every}}); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	r.start(b)
	// The first time measured comes a whole period after every registration was made, so
	// that all of them fire at it; the starts of earlier times are not measured.
	at := time.Now().Truncate(every).Add(2 * every)
	var lates []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		lates = burstStarts(b, started, at, lates)
		at = at.Add(every)
	}
	reportPercentiles(b, lates, 50, 99, 100)
}

// BenchmarkRiverBurst is the baseline of BenchmarkFleetTimeTriggersDueAtOnce: River alone,
// burstTriggers trivial jobs inserted with one InsertMany, and how late after the insert's
// start each Work starts.
func BenchmarkRiverBurst(b *testing.B) {
	var t0 atomic.Pointer[time.Time]
	started := make(chan time.Duration, burstTriggers)
	client, _ := startRiver(b, river.WorkFunc(func(context.Context, *river.Job[benchArgs]) error {
		started <- time.Since(*t0.Load())
		return nil
	}))
	batch := make([]river.InsertManyParams, burstTriggers)
	for k := range batch {
		batch[k] = river.InsertManyParams{Args: benchArgs{}}
	}
	var lates []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		t0.Store(&now)
		if _, err := client.InsertMany(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
		lates = receiveN(b, started, burstTriggers, lates)
	}
	reportPercentiles(b, lates, 50, 99, 100)
}

// receiveN receives n durations from c, and returns lates with them appended.
func receiveN(b *testing.B, c <-chan time.Duration, n int, lates []time.Duration) []time.Duration {
	for range n {
		d, err := receive(b.Context(), c)
		if err != nil {
			b.Fatal(err)
		}
		lates = append(lates, d)
	}
	return lates
}

// burstStarts receives the starts of the burst of time at from started, and returns lates
// with their lateness appended. It skips the starts of earlier times.
func burstStarts(b *testing.B, started <-chan timeStart, at time.Time, lates []time.Duration) []time.Duration {
	for n := 0; n < burstTriggers; {
		s, err := receive(b.Context(), started)
		switch {
		case err != nil:
			b.Fatal(err)
		case s.at.Equal(at):
			lates = append(lates, s.late)
			n++
		case s.at.After(at):
			b.Fatalf("a start of %v before the burst of %v ended: the burst took longer than a period", s.at, at)
		}
	}
	return lates
}

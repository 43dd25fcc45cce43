package bgtaskriver

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// Config configures a [Fleet]. Its zero value is usable: River's default schema, and the
// defaults below.
type Config struct {
	// Schema is the Postgres schema of River's tables and of the store's table: River's
	// Config.Schema. It must exist. Default: "", the connections' search_path.
	Schema string
	// ID names this replica: River's client ID, which [InstanceStatus].Replica reports.
	// Two replicas running at once must not share one. Default: River's, the host name
	// and the time the Fleet was made.
	ID string
	// MaxWorkers is how many instances this replica runs at once (River's MaxWorkers of
	// the queue "bgtask"). It is per replica: nothing limits the instances of the whole
	// fleet. Default: 100.
	MaxWorkers int
	// RescueAfter is how long the job of a replica that crashed (was killed, or lost the
	// database) stays running before another replica runs its fire again: River's
	// RescueStuckJobsAfter. River's rescuer looks every 30 seconds, and its scheduler
	// makes a rescued job available within 5 seconds, so the fire runs again up to 35
	// seconds after RescueAfter.
	//
	// River cannot tell a crashed replica's job from a long one, so RescueAfter also
	// bounds every instance: one still running after RescueAfter is canceled with
	// ExecutionTimeExceeded, and may run again elsewhere before it has wound down. Keep
	// it above the registrations' MaxExecutionTime plus the host's GracePeriod.
	// Default: 1 hour.
	RescueAfter time.Duration
	// StopCancelsJobs ends the fires whose instances [Fleet.Stop] cancels (with
	// Terminating): their jobs end cancelled, with that result. Without it, they run
	// again on another replica. Default: false.
	StopCancelsJobs bool
	// FetchCooldown is the least time between two fetches of jobs by this replica, and
	// FetchPollInterval the longest, when no notification of a new job comes (River's
	// settings of the same names). River's defaults, 100 ms and 1 s, spare the database
	// at the cost of latency: the cooldown also spaces the notifications of the jobs
	// this replica inserts, so that a fire dispatched within a cooldown of the last
	// notification may wait for the next poll. FetchPollInterval may not be shorter than
	// FetchCooldown. Defaults: 10 ms, and 200 ms or FetchCooldown if longer.
	FetchCooldown     time.Duration
	FetchPollInterval time.Duration
	// Logger receives River's log and the fleet's own problems (a progress write that
	// failed). Default: slog.Default().
	Logger *slog.Logger
}

// The defaults of Config.
const (
	defaultMaxWorkers        = 100
	defaultRescueAfter       = time.Hour
	defaultFetchCooldown     = 10 * time.Millisecond
	defaultFetchPollInterval = 200 * time.Millisecond
)

// withDefaults returns c with its defaults filled in, or an error wrapping
// bgtask.ErrInvalidArgument for a negative setting, or a FetchPollInterval shorter than
// the FetchCooldown.
func (c Config) withDefaults() (Config, error) {
	for _, s := range []struct {
		name     string
		negative bool
	}{
		{"MaxWorkers", c.MaxWorkers < 0}, {"RescueAfter", c.RescueAfter < 0},
		{"FetchCooldown", c.FetchCooldown < 0}, {"FetchPollInterval", c.FetchPollInterval < 0},
	} {
		if s.negative { // the first in the order of Config's fields
			return c, fmt.Errorf("bgtaskriver: Config.%s is negative: %w", s.name, bgtask.ErrInvalidArgument)
		}
	}
	c.MaxWorkers = cmp.Or(c.MaxWorkers, defaultMaxWorkers)
	c.RescueAfter = cmp.Or(c.RescueAfter, defaultRescueAfter)
	c.FetchCooldown = cmp.Or(c.FetchCooldown, defaultFetchCooldown)
	c.FetchPollInterval = cmp.Or(c.FetchPollInterval, max(defaultFetchPollInterval, c.FetchCooldown))
	if c.FetchPollInterval < c.FetchCooldown {
		return c, fmt.Errorf("bgtaskriver: Config.FetchPollInterval is shorter than FetchCooldown: %w", bgtask.ErrInvalidArgument)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Fleet runs the fires of a host's persistent registrations on River, once per fleet: one
// Fleet per replica, all on one database and schema, each with its host (see the package
// doc). Get one from [New]; the zero Fleet is not usable. A Fleet is safe for concurrent
// use.
type Fleet struct {
	cfg         Config
	pool        *pgxpool.Pool
	store       *Store
	client      *river.Client[pgx.Tx]
	timeFireSQL string // timeFireSQL on the schema's tables

	ins      inserter
	progress progress
	host     atomic.Pointer[bgtask.Host] // set once, by Start
}

// New returns the Fleet of one replica, on pool: a [Store] of the registrations and a River
// client whose worker runs the fires, in cfg.Schema. It does not connect: [Fleet.Migrate]
// creates the tables, and [Fleet.Start] starts taking fires. A nil pool, a negative
// setting or a schema River would refuse is an error wrapping bgtask.ErrInvalidArgument;
// River's own checks of the settings give the other errors. The fleet never closes pool.
func New(pool *pgxpool.Pool, cfg Config) (*Fleet, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	store, err := NewStore(pool, cfg.Schema)
	if err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, pool: pool, store: store}
	f.progress.log = cfg.Logger
	workers := river.NewWorkers()
	river.AddWorker(workers, &worker{f: f})
	f.client, err = river.NewClient(riverpgxv5.New(pool), &river.Config{
		ID:                cfg.ID,
		Schema:            cfg.Schema,
		Logger:            cfg.Logger,
		Queues:            map[string]river.QueueConfig{queue: {MaxWorkers: cfg.MaxWorkers}},
		Workers:           workers,
		FetchCooldown:     cfg.FetchCooldown,
		FetchPollInterval: cfg.FetchPollInterval,
		// River's time limit of a job: past it, River cancels the job's context (the
		// instance is canceled with ExecutionTimeExceeded) and its rescuer would take the
		// job for a crashed replica's. See Config.RescueAfter.
		JobTimeout:           cfg.RescueAfter,
		RescueStuckJobsAfter: cfg.RescueAfter,
		MaxAttempts:          maxAttempts,
	})
	if err != nil {
		return nil, fmt.Errorf("bgtaskriver: %w", err)
	}
	f.ins.client, f.progress.client = f.client, f.client
	f.ins.pool = pool
	f.timeFireSQL = timeFireSQLFor(cfg.Schema)
	return f, nil
}

// Options returns the options that make a host one of the fleet's replicas: the fleet's
// store ([bgtask.WithStore]) and dispatcher ([bgtask.WithDispatcher]). Give them to
// bgtask.NewHost, then the host to [Fleet.Start].
func (f *Fleet) Options() []bgtask.Option {
	return []bgtask.Option{bgtask.WithStore(f.store), bgtask.WithDispatcher(dispatcher{f})}
}

// ID returns the replica's River client ID (see Config.ID).
func (f *Fleet) ID() string { return f.client.ID() }

// Migrate creates River's tables, the store's and the fleet's own (bgtask_time_fire, see
// the package doc) in the fleet's schema, or brings them up to date. It also makes an
// index on River's job table, bgtask_time_fire_jobs, of the time fires' unfinished jobs,
// if it does not exist: Postgres holds the writes to the table while it builds it, which
// on a large table of jobs takes a while, once. It is idempotent and safe to call from
// several replicas at once: they take turns, under a Postgres advisory lock held by one
// connection of the pool meanwhile, so the pool needs at least two connections (with
// one, Migrate is an error wrapping bgtask.ErrInvalidArgument), and Migrate waits,
// bounded only by ctx, while another replica migrates. River's migrations log what they
// apply, at Info.
func (f *Fleet) Migrate(ctx context.Context) error {
	migrator, err := rivermigrate.New(riverpgxv5.New(f.pool), &rivermigrate.Config{Schema: f.cfg.Schema, Logger: f.cfg.Logger})
	if err != nil {
		return fmt.Errorf("bgtaskriver: %w", err)
	}
	if n := f.pool.Config().MaxConns; n < 2 {
		return fmt.Errorf("bgtaskriver: Migrate: a pool of %d connection: it needs two: %w", n, bgtask.ErrInvalidArgument)
	}
	unlock, err := f.lockMigrations(ctx)
	if err != nil {
		return fmt.Errorf("bgtaskriver: migrating: %w", err)
	}
	defer unlock()
	// River's migrations run one transaction each: some cannot share one (a new enum value
	// cannot be used in the transaction that adds it).
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("bgtaskriver: migrating River: %w", err)
	}
	err = pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		if err := f.store.migrateTx(ctx, tx); err != nil {
			return err
		}
		return migrateTimeFiresTx(ctx, tx, f.cfg.Schema)
	})
	if err != nil {
		return fmt.Errorf("bgtaskriver: migrating: %w", err)
	}
	return nil
}

// lockMigrations takes the fleet's session lock on its migrations, on a connection of the
// pool that it holds until unlock. A connection whose unlock fails is closed, which ends
// its session and so its lock.
func (f *Fleet) lockMigrations(ctx context.Context) (unlock func(), err error) {
	conn, err := f.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	key := "bgtaskriver.migrate fleet " + f.cfg.Schema
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended($1, 0))", key); err != nil {
		conn.Release()
		return nil, err
	}
	return func() {
		ctx := context.WithoutCancel(ctx)
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock(hashtextextended($1, 0))", key); err != nil {
			_ = conn.Conn().Close(ctx)
		}
		conn.Release()
	}, nil
}

// Start starts taking fires from the queue and running them on h, which must be a host
// made with [Fleet.Options] (and whose registrations every replica Ensures alike). It
// starts River's client, whose goroutines run until [Fleet.Stop]; ctx is used while
// starting only: its end does not stop the fleet. A fleet starts once: Start again, or
// with a nil host or one not made with this fleet's Options, is an error wrapping
// bgtask.ErrInvalidArgument.
//
// Before Start, and after Stop, the fleet still dispatches the host's fires (it inserts
// jobs), reads and cancels instances: it only runs none.
func (f *Fleet) Start(ctx context.Context, h *bgtask.Host) error {
	if h == nil {
		return fmt.Errorf("bgtaskriver: Start: nil host: %w", bgtask.ErrInvalidArgument)
	}
	if d, ok := h.Dispatcher().(dispatcher); !ok || d.f != f {
		return fmt.Errorf("bgtaskriver: Start: a host not made with this fleet's Options: %w", bgtask.ErrInvalidArgument)
	}
	if !f.host.CompareAndSwap(nil, h) {
		return fmt.Errorf("bgtaskriver: Start: started before: %w", bgtask.ErrInvalidArgument)
	}
	if err := f.client.Start(context.WithoutCancel(ctx)); err != nil {
		f.host.Store(nil) // not started: Start may be called again
		return fmt.Errorf("bgtaskriver: starting River: %w", err)
	}
	return nil
}

// Stop stops taking fires, cancels the instances running here with Terminating, and waits
// until each has ended (within the host's grace period) and River's goroutines have
// returned, or until ctx ends (its error is then returned, and River's goroutines and the
// instances are left running). The fires of the canceled instances run again on another
// replica, unless Config.StopCancelsJobs. Stop does not shut the host down: call
// Host.Shutdown after it. Stop before Start, or again, does nothing more. Do not call it
// from a task, or a handler, of this replica: it would wait for that task's own job until
// ctx ends.
func (f *Fleet) Stop(ctx context.Context) error {
	err := f.client.StopAndCancel(ctx)
	f.progress.removeHooks()
	if err != nil {
		return fmt.Errorf("bgtaskriver: stopping River: %w", err)
	}
	return nil
}

// Command fleet shows a fleet of bgtask hosts sharing their work through bgtaskriver. Start
// it two or three times, in several terminals, against one Postgres database:
//
//	go run ./examples/fleet -db postgres://localhost:5432/bgtask
//
// Each replica Ensures the same two registrations: "tick", on a time trigger every 2
// seconds, which runs once in the whole fleet at each time, on whichever replica takes it;
// and "report", which each replica Requests every second and which runs once at a time in
// the fleet, for about 1.5 seconds (so a Request often answers CurrentlyRunning: one runs,
// or waits, somewhere). Each replica prints what it runs, with its name and pid. Ctrl-C
// stops a replica gracefully: a report it was running is canceled with Terminating and
// runs again on another replica; kill one with SIGKILL instead, and its report runs again
// after -rescue.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	host, _ := os.Hostname()
	db := flag.String("db", os.Getenv("DATABASE_URL"), "the Postgres URL (default $DATABASE_URL)")
	name := flag.String("name", fmt.Sprintf("%s-%d", host, os.Getpid()), "the replica's name, unique in the fleet")
	rescue := flag.Duration("rescue", 15*time.Second, "how long the work of a killed replica waits before another runs it")
	flag.Parse()
	if *db == "" {
		log.Fatal("fleet: no database: give -db postgres://… or set DATABASE_URL")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *db, *name, *rescue); err != nil {
		log.Fatal("fleet: ", err)
	}
}

// run runs one replica until ctx ends, then stops it gracefully.
func run(ctx context.Context, url, name string, rescue time.Duration) (err error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	fleet, err := bgtaskriver.New(pool, bgtaskriver.Config{ID: name, RescueAfter: rescue, Logger: logger})
	if err != nil {
		return err
	}
	if err := fleet.Migrate(ctx); err != nil {
		return err
	}
	say := func(format string, args ...any) {
		fmt.Printf("%s [%s] %s\n", time.Now().Format("15:04:05.000"), name, fmt.Sprintf(format, args...))
	}
	host, err := bgtask.NewHost(append(fleet.Options(),
		bgtask.WithLogger(logger),
		bgtask.WithEntryPoint("tick", tick(say)),
		bgtask.WithEntryPoint("report", report(say)))...)
	if err != nil {
		return err
	}
	started := false
	defer func() { // on every return: the fleet first, so that it hands running fires over
		if started {
			say("stopping: a report running here runs again on another replica")
		}
		err = errors.Join(err, stop(fleet.Stop, started), stop(host.Shutdown, true))
	}()
	trigger := bgtask.NewApplicationTrigger()
	if _, err := host.Ensure(bgtask.Builder{Name: "tick", TaskEntryPoint: "tick", Trigger: &bgtask.TimeTrigger{FreshnessTime: 2 * time.Second}}); err != nil {
		return err
	}
	if _, err := host.Ensure(bgtask.Builder{Name: "report", TaskEntryPoint: "report", Trigger: trigger}); err != nil {
		return err
	}
	if err := fleet.Start(ctx, host); err != nil {
		return err
	}
	started = true
	say("replica started (pid %d); Ctrl-C stops it", os.Getpid())
	request(ctx, trigger, name, say)
	return nil
}

// stop calls f, a Stop or a Shutdown, if started, with 30 s of its own.
func stop(f func(context.Context) error, started bool) error {
	if !started {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return f(ctx)
}

// request Requests a report every second until ctx ends, and says what the fleet answered.
func request(ctx context.Context, trigger *bgtask.ApplicationTrigger, name string, say func(string, ...any)) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		res, err := trigger.Request(ctx, map[string]any{"from": name, "n": n})
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			say("request %d: %v", n, err)
		default:
			say("requested report %d: %v", n, res) // CurrentlyRunning: one is queued or running in the fleet
		}
	}
}

// tick is the time trigger's task: it says which time of the grid it runs for.
func tick(say func(string, ...any)) bgtask.TaskFunc {
	return func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
		d, ok := inst.TriggerDetails().(*bgtask.TimeTriggerDetails)
		if !ok {
			return fmt.Errorf("tick: started by %T, not its time trigger", inst.TriggerDetails())
		}
		say("tick for %s (instance %s)", d.ScheduledAt.Local().Format("15:04:05"), inst.InstanceID())
		return nil
	}
}

// report is the requested task: it works for about 1.5 seconds, reporting its progress,
// and says whose Request it ran and how it ended.
func report(say func(string, ...any)) bgtask.TaskFunc {
	return func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		from, err := bgtask.Arg[string](inst, "from")
		if err != nil {
			return err
		}
		n, err := bgtask.Arg[int](inst, "n")
		if err != nil {
			return err
		}
		say("report %d requested by %s: running (instance %s)", n, from, inst.InstanceID())
		for p := uint32(10); p <= 100; p += 10 {
			select {
			case <-time.After(150 * time.Millisecond):
				inst.SetProgress(p)
			case <-ctx.Done():
				say("report %d: %v", n, context.Cause(ctx))
				return context.Cause(ctx)
			}
		}
		say("report %d requested by %s: done", n, from)
		return nil
	}
}

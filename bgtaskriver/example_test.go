package bgtaskriver_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
	"github.com/jackc/pgx/v5/pgxpool"
)

// One replica of a fleet: every replica of the program runs the same code, on the same
// database. The fleet's time trigger runs once an hour in the whole fleet, and a Request on
// any replica runs once, on one of them.
//
// The example needs a Postgres database, so it has no Output: go test compiles it and does
// not run it. examples/fleet in the repository is a program to run several times.
func ExampleFleet() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	fleet, err := bgtaskriver.New(pool, bgtaskriver.Config{RescueAfter: 10 * time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	if err := fleet.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	report := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		month, err := bgtask.Arg[string](inst, "month")
		if err != nil {
			return err
		}
		inst.SetProgress(50) // read on any replica with fleet.Instance
		fmt.Println("report of", month, "on", fleet.ID())
		return nil
	})
	cleanUp := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	host, err := bgtask.NewHost(append(fleet.Options(),
		bgtask.WithEntryPoint("report", report), bgtask.WithEntryPoint("clean-up", cleanUp))...)
	if err != nil {
		log.Fatal(err)
	}
	// Every replica Ensures the same registrations.
	trigger := bgtask.NewApplicationTrigger()
	reg, err := host.Ensure(bgtask.Builder{Name: "report", TaskEntryPoint: "report", Trigger: trigger})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := host.Ensure(bgtask.Builder{Name: "clean-up", TaskEntryPoint: "clean-up",
		Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}}); err != nil {
		log.Fatal(err)
	}
	if err := fleet.Start(ctx, host); err != nil {
		log.Fatal(err)
	}

	// Runs once, on this replica or another; waits for its end, wherever it ran.
	out, res, err := trigger.RequestAndWait(ctx, map[string]any{"month": "2026-11"})
	fmt.Println(res, out.Err, err)
	last, ok, err := fleet.LastResult(ctx, reg.TaskID()) // on any replica
	fmt.Println(last.InstanceID == out.InstanceID, ok, err)

	// Stop first: the instances it cancels (with Terminating) run again on another replica.
	if err := fleet.Stop(ctx); err != nil {
		log.Print(err)
	}
	if err := host.Shutdown(ctx); err != nil {
		log.Print(err)
	}
}

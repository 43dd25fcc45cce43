// Command restart shows registrations that survive restarts: run it twice. The first run
// registers a time trigger and an on-demand task in a store file and runs the task once;
// the second run finds both again, with the task's last result and the time trigger's
// countdown where the first run left it.
//
//	go run ./examples/restart             # first run: registers, runs once, stops
//	go run ./examples/restart             # later: the same registrations, countdown kept
//	go run ./examples/restart -reset      # start over
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/boltstore"
)

func main() {
	path := flag.String("file", filepath.Join(os.TempDir(), "bgtask-restart-demo.db"), "the store file")
	reset := flag.Bool("reset", false, "remove the store file first")
	flag.Parse()
	if *reset {
		_ = os.Remove(*path)
	}
	if err := run(*path); err != nil {
		fmt.Fprintln(os.Stderr, "restart:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	store, err := boltstore.Open(path)
	if err != nil {
		return err
	}
	defer store.Close()

	report := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		n, _ := bgtask.Arg[int](inst, "rows")
		fmt.Printf("report: %d rows\n", n)
		return nil
	})
	backup := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		fmt.Println("backup: ran for the slot due at", inst.TriggerDetails().(*bgtask.TimeTriggerDetails).ScheduledAt.Format(time.TimeOnly))
		return nil
	})
	host, err := bgtask.NewHost(bgtask.WithStore(store),
		bgtask.WithEntryPoint("report", report), bgtask.WithEntryPoint("backup", backup))
	if err != nil {
		return err
	}
	restored := host.AllTasks()
	fmt.Printf("%d registration(s) found in %s\n", len(restored), path)
	for _, r := range restored {
		last, ok := r.LastResult()
		switch {
		case !ok:
			fmt.Printf("  %-7s %s, never completed\n", r.Name(), r.TaskID())
		default:
			fmt.Printf("  %-7s %s, last completed %s: %v\n", r.Name(), r.TaskID(), last.Finished.Format(time.TimeOnly), result(last.Err))
		}
	}

	// Ensure, not Register: a restart finds the registration rather than adding one, and
	// the time trigger keeps its countdown.
	trigger := bgtask.NewApplicationTrigger()
	if _, err := host.Ensure(bgtask.Builder{Name: "report", TaskEntryPoint: "report", Trigger: trigger}); err != nil {
		return err
	}
	backups, err := host.Ensure(bgtask.Builder{Name: "backup", TaskEntryPoint: "backup",
		Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
	if err != nil {
		return err
	}
	backups.OnCompleted(func(e bgtask.CompletedEventArgs) { fmt.Println("backup completed:", result(e.Err)) })
	if next, ok := backups.NextFire(); ok {
		fmt.Println("next backup due at", next.Format(time.TimeOnly), "(kept across runs)")
	}

	out, _, err := trigger.RequestAndWait(context.Background(), map[string]any{"rows": 42})
	if err != nil {
		return err
	}
	fmt.Println("report completed:", result(out.Err))
	fmt.Println("the backup runs every minute; run this again to see its countdown kept")
	time.Sleep(2 * time.Second) // a backup that came due while the program was down runs now
	return host.Shutdown(context.Background())
}

func result(err error) string {
	if err == nil {
		return "ok"
	}
	if errors.Is(err, bgtask.ErrUnknownEntryPoint) {
		return "no task bound: " + err.Error()
	}
	return err.Error()
}

package boltstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/boltstore"
)

// A registration survives a restart: the second host, over the same file, finds it with its
// last result, and its time trigger fires when the first host's countdown said.
func Example_restart() {
	dir, _ := os.MkdirTemp("", "bgtask")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "tasks.db")
	scheduled := make(chan time.Time, 1)
	sync := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		if d, ok := inst.TriggerDetails().(*bgtask.TimeTriggerDetails); ok {
			scheduled <- d.ScheduledAt
		}
		return nil
	})
	policy := bgtask.WithPolicy(bgtask.Policy{MinFreshness: time.Second})
	every := &bgtask.TimeTrigger{FreshnessTime: time.Second}

	// The first run registers a sync every second and an on-demand one, and runs that once.
	start := time.Now()
	store, _ := boltstore.Open(path)
	host, _ := bgtask.NewHost(bgtask.WithStore(store), bgtask.WithEntryPoint("sync", sync), policy)
	_, _ = host.Ensure(bgtask.Builder{Name: "periodic", TaskEntryPoint: "sync", Trigger: every})
	now := bgtask.NewApplicationTrigger()
	_, _ = host.Ensure(bgtask.Builder{Name: "now", TaskEntryPoint: "sync", Trigger: now})
	_, _, _ = now.RequestAndWait(context.Background(), nil)
	_ = host.Shutdown(context.Background())
	_ = store.Close()

	// The second run finds both; Ensure finds the periodic sync rather than adding one.
	store, _ = boltstore.Open(path)
	defer store.Close()
	host, _ = bgtask.NewHost(bgtask.WithStore(store), bgtask.WithEntryPoint("sync", sync), policy)
	defer host.Shutdown(context.Background())
	_, _ = host.Ensure(bgtask.Builder{Name: "periodic", TaskEntryPoint: "sync", Trigger: every})
	for _, r := range host.AllTasks() {
		_, ran := r.LastResult()
		fmt.Printf("%s %T ran:%v\n", r.Name(), r.Trigger(), ran)
	}
	// The countdown went on: the first fire is a second after the first run registered it.
	fmt.Println("fired at", (<-scheduled).Sub(start).Round(100*time.Millisecond))
	// Output:
	// now *bgtask.ApplicationTrigger ran:true
	// periodic *bgtask.TimeTrigger ran:false
	// fired at 1s
}

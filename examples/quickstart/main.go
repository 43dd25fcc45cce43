// Command quickstart shows the bgtask model in a few seconds: a download that reports its
// progress, a job that hands its work to several goroutines under deferrals, a report
// that runs past its time limit and is canceled, a task that panics, and a sync that runs
// on a time trigger only while the network is up. Every completion is printed with its
// result; Ctrl-C shuts the host down gracefully.
//
// With -http 127.0.0.1:PORT it also serves the host's live page (package bgtaskhttp, with
// cancel buttons) at http://127.0.0.1:PORT/debug/bgtask/, and keeps running, requesting
// its tasks again every few seconds, until Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskhttp"
)

func main() {
	addr := flag.String("http", "", "serve the live page on this address, such as 127.0.0.1:8080, and run until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// out serializes the lines printed by handlers, which run on the library's goroutines.
var out sync.Mutex

func say(format string, args ...any) {
	out.Lock()
	defer out.Unlock()
	fmt.Printf(format+"\n", args...)
}

// run runs the demo until its tasks have completed once or ctx ends; with an address,
// it serves the live page there and runs until ctx ends.
func run(ctx context.Context, addr string) error {
	opts := []bgtask.Option{
		// A short minimum period, so that the time trigger shows itself within seconds.
		bgtask.WithPolicy(bgtask.Policy{GracePeriod: time.Second, MinFreshness: 100 * time.Millisecond}),
		bgtask.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	}
	if addr != "" {
		opts = append(opts, bgtask.WithDeferralSites(true)) // the page shows where each was taken
	}
	host, err := bgtask.NewHost(opts...)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup // the first completion of each demo
	var triggers []*bgtask.ApplicationTrigger
	for _, d := range demos {
		trigger := bgtask.NewApplicationTrigger()
		reg, err := host.Register(bgtask.Builder{Name: d.name, Task: d.task, Trigger: trigger, MaxExecutionTime: d.limit})
		if err != nil {
			return err
		}
		if d.progress {
			reg.OnProgress(func(e bgtask.ProgressEventArgs) { say("%-10s %s", reg.Name(), bar(e.Progress)) })
		}
		wg.Add(1)
		var first sync.Once
		reg.OnCompleted(func(e bgtask.CompletedEventArgs) {
			defer first.Do(wg.Done)
			say("%-10s completed: %s", reg.Name(), result(e))
		})
		res, err := trigger.Request(ctx, d.args)
		if err != nil {
			return err
		}
		say("%-10s requested with %v: %s", d.name, d.args, res)
		triggers = append(triggers, trigger)
	}

	stopSync, err := startSync(ctx, host)
	if err != nil {
		return err
	}
	defer stopSync()

	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	if addr != "" {
		if err := servePage(ctx, host, addr, triggers); err != nil {
			return err
		}
	} else {
		select {
		case <-all:
			say("all tasks completed; shutting down")
		case <-ctx.Done():
			say("interrupted; shutting down")
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = host.Shutdown(shutdownCtx)
	<-all // Shutdown has delivered every Completed event
	say("shutdown: %v", err)
	return nil
}

// servePage serves the live page of host on addr until ctx ends, requesting the demos
// again every few seconds meanwhile, so that there is always something to see; then it
// shuts the server down, which ends the pages' event streams.
func servePage(ctx context.Context, host *bgtask.Host, addr string, triggers []*bgtask.ApplicationTrigger) error {
	url, stop, err := listen(host, addr)
	if err != nil {
		return err
	}
	say("serving the live page on %s; Ctrl-C to stop", url)
	var again sync.WaitGroup
	again.Go(func() { requestEvery(ctx, 3*time.Second, triggers) })
	<-ctx.Done()
	say("interrupted; shutting down")
	again.Wait()
	return stop()
}

// listen serves bgtaskhttp, with cancel buttons, at /debug/bgtask/ on addr, on a
// goroutine of its own. It returns the page's URL, and stop, which shuts the server down
// gracefully and waits for that goroutine.
func listen(host *bgtask.Host, addr string) (url string, stop func() error, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/debug/bgtask/", http.StripPrefix("/debug/bgtask", bgtaskhttp.New(host, bgtaskhttp.AllowCancel())))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	stop = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		if serveErr := <-served; !errors.Is(serveErr, http.ErrServerClosed) {
			return serveErr
		}
		return err
	}
	return "http://" + ln.Addr().String() + "/debug/bgtask/", stop, nil
}

// requestEvery requests each demo but those run once again every period, with its
// arguments, until ctx ends. A demo still running answers CurrentlyRunning and runs on.
func requestEvery(ctx context.Context, period time.Duration, triggers []*bgtask.ApplicationTrigger) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for k, t := range triggers {
			if demos[k].once {
				continue
			}
			if _, err := t.Request(ctx, demos[k].args); err != nil {
				return // ctx ended
			}
		}
	}
}

// startSync registers a sync every 400ms that needs the network, and takes the network
// down for a while: the fires due meanwhile are held and run once when it is back.
func startSync(ctx context.Context, host *bgtask.Host) (stop func(), err error) {
	online := bgtask.NewCondition(true)
	begin := time.Now()
	_, err = host.Register(bgtask.Builder{
		Name:       "sync",
		Trigger:    &bgtask.TimeTrigger{FreshnessTime: 400 * time.Millisecond},
		Conditions: []bgtask.Condition{online},
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			due := inst.TriggerDetails().(*bgtask.TimeTriggerDetails).ScheduledAt
			say("%-10s runs for the fire due at %.1fs (started %.1fs)", "sync",
				due.Sub(begin).Seconds(), time.Since(begin).Seconds())
			return nil
		}),
	})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, step := range []struct {
			at time.Duration
			on bool
		}{{500 * time.Millisecond, false}, {1500 * time.Millisecond, true}} {
			select {
			case <-ctx.Done():
				return
			case <-time.After(step.at - time.Since(begin)):
			}
			say("%-10s network up: %v", "sync", step.on)
			online.Set(step.on)
		}
	}()
	return func() { <-done }, nil
}

type demo struct {
	name     string
	task     bgtask.TaskFunc
	args     map[string]any
	limit    time.Duration
	progress bool
	once     bool // not requested again with -http: its log is long
}

var demos = []demo{
	{name: "download", task: download, progress: true,
		args: map[string]any{"url": "https://example.com/big.iso", "chunks": 10}},
	{name: "thumbnail", task: thumbnails, args: map[string]any{"images": []string{"a.png", "b.png", "c.png"}}},
	{name: "report", task: report, limit: time.Second, args: map[string]any{"rows": 1_000_000}},
	{name: "flaky", task: flaky, args: map[string]any{"config": nil}, once: true},
}

// download reports its progress after each chunk.
func download(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
	chunks, err := bgtask.Arg[int](inst, "chunks")
	if err != nil {
		return err
	}
	for c := 1; c <= chunks; c++ {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(150 * time.Millisecond):
		}
		inst.SetProgress(uint32(100 * c / chunks))
	}
	return nil
}

// thumbnails returns at once and leaves the work to one goroutine per image, each under a
// deferral: the instance completes when the last one does.
func thumbnails(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
	images, err := bgtask.Arg[[]string](inst, "images")
	if err != nil {
		return err
	}
	for k, img := range images {
		d := inst.GetDeferral()
		go func() {
			defer d.Complete()
			time.Sleep(time.Duration(k+1) * 300 * time.Millisecond)
			say("%-10s resized %s", "thumbnail", img)
		}()
	}
	return nil
}

// report takes longer than its one-second limit; it honors the cancellation.
func report(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
	inst.OnCanceled(func(_ bgtask.BackgroundTaskInstance, reason bgtask.CancellationReason) {
		say("%-10s canceled: %s", "report", reason)
	})
	select {
	case <-time.After(10 * time.Second):
		return nil
	case <-ctx.Done():
		return fmt.Errorf("report stopped early: %w", context.Cause(ctx))
	}
}

// flaky panics: the host recovers it and reports it as the instance's result.
func flaky(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
	cfg := inst.TriggerDetails().(*bgtask.ApplicationTriggerDetails).Arguments["config"]
	return cfg.(error) // a nil interface: the type assertion panics
}

func bar(p uint32) string {
	n := int(p / 10)
	return fmt.Sprintf("[%s%s] %3d%%", strings.Repeat("#", n), strings.Repeat(".", 10-n), p)
}

func result(e bgtask.CompletedEventArgs) string {
	var pe *bgtask.PanicError
	switch {
	case errors.As(e.Err, &pe):
		return fmt.Sprintf("panic recovered: %v", pe.Value)
	case e.Err != nil:
		return "error: " + e.Err.Error()
	case e.Canceled:
		return "canceled (" + e.Reason.String() + ")"
	default:
		return "ok"
	}
}

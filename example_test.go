package bgtask_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/bgtask-go/bgtask"
)

// The whole model in one place: a host, a registration on an application trigger, a
// request with arguments, the Completed event, and a graceful shutdown.
func Example() {
	host, err := bgtask.NewHost()
	if err != nil {
		panic(err)
	}
	trigger := bgtask.NewApplicationTrigger()
	reg, err := host.Register(bgtask.Builder{
		Name:    "greet",
		Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			args := inst.TriggerDetails().(*bgtask.ApplicationTriggerDetails).Arguments
			fmt.Println("hello,", args["name"])
			return nil
		}),
	})
	if err != nil {
		panic(err)
	}
	done := make(chan struct{})
	reg.OnCompleted(func(e bgtask.CompletedEventArgs) {
		fmt.Println("completed:", e.CheckResult())
		close(done)
	})
	res, err := trigger.Request(context.Background(), map[string]any{"name": "gopher"})
	<-done
	fmt.Println("request:", res, err)
	fmt.Println(host.Shutdown(context.Background()))
	// Output:
	// hello, gopher
	// completed: <nil>
	// request: Allowed <nil>
	// <nil>
}

// run registers task on a new host, fires it once and returns the host and the Completed
// event; the examples below use it to stay short.
func run(task bgtask.TaskFunc, opts ...bgtask.Option) (*bgtask.Host, bgtask.CompletedEventArgs) {
	host, _ := bgtask.NewHost(opts...)
	trigger := bgtask.NewApplicationTrigger()
	reg, _ := host.Register(bgtask.Builder{Name: "example", Trigger: trigger, Task: task})
	done := make(chan bgtask.CompletedEventArgs, 1)
	reg.OnCompleted(func(e bgtask.CompletedEventArgs) { done <- e })
	if _, err := trigger.Request(context.Background(), nil); err != nil {
		panic(err)
	}
	return host, <-done
}

// A deferral keeps the instance alive after Run returns, until the work handed to another
// goroutine calls Complete.
func ExampleBackgroundTaskInstance_GetDeferral() {
	host, e := run(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		d := inst.GetDeferral()
		go func() {
			defer d.Complete()
			fmt.Println("async work done")
		}()
		fmt.Println("Run returns")
		return nil
	})
	fmt.Println("completed:", e.Err)
	_ = host.Shutdown(context.Background())
	// Unordered output:
	// Run returns
	// async work done
	// completed: <nil>
}

// A Canceled handler learns why the instance was canceled; the context is already done
// when it runs, and its cause is the *CanceledError with the reason.
func ExampleBackgroundTaskInstance_OnCanceled() {
	host, _ := bgtask.NewHost()
	trigger := bgtask.NewApplicationTrigger()
	running := make(chan struct{})
	reg, _ := host.Register(bgtask.Builder{Name: "sync", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			d := inst.GetDeferral()
			inst.OnCanceled(func(inst bgtask.BackgroundTaskInstance, reason bgtask.CancellationReason) {
				fmt.Println("canceled:", reason, "- context's cause:", context.Cause(inst.Context()))
				d.Complete()
			})
			close(running)
			return nil
		})})
	done := make(chan struct{})
	reg.OnCompleted(func(e bgtask.CompletedEventArgs) {
		fmt.Println("completed, canceled:", e.Canceled, e.Reason)
		close(done)
	})
	_, _ = trigger.Request(context.Background(), nil)
	<-running
	host.Cancel(bgtask.LoggingOff)
	<-done
	_ = host.Shutdown(context.Background())
	// Output:
	// canceled: LoggingOff - context's cause: bgtask: canceled: LoggingOff
	// completed, canceled: true LoggingOff
}

// Go runs work under a deferral; the first error becomes the instance's result.
func ExampleBackgroundTaskInstance_Go() {
	host, e := run(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		for _, part := range []string{"a", "b", "c"} {
			inst.Go(func(ctx context.Context) error {
				if part == "b" {
					return fmt.Errorf("part %s: %w", part, errors.ErrUnsupported)
				}
				return nil
			})
		}
		return nil
	})
	fmt.Println("result:", e.Err)
	_ = host.Shutdown(context.Background())
	// Output:
	// result: part b: unsupported operation
}

// Request answers at once: the task runs on; a second request while it runs is refused.
func ExampleApplicationTrigger_Request() {
	host, _ := bgtask.NewHost()
	trigger := bgtask.NewApplicationTrigger()
	release := make(chan struct{})
	_, _ = host.Register(bgtask.Builder{Name: "download", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			<-release
			return nil
		})})
	args := map[string]any{"url": "https://example.com/file"}
	fmt.Println(trigger.Request(context.Background(), args))
	fmt.Println(trigger.Request(context.Background(), args))
	close(release)
	fmt.Println(host.Shutdown(context.Background()))
	fmt.Println(trigger.Request(context.Background(), args))
	// Output:
	// Allowed <nil>
	// CurrentlyRunning <nil>
	// <nil>
	// DisabledByPolicy <nil>
}

// Progress reaches OnProgress handlers on a library goroutine, the last value before
// Completed. Values may be coalesced; this task waits for each to be shown so that every
// one appears.
func ExampleRegistration_OnProgress() {
	host, _ := bgtask.NewHost()
	trigger := bgtask.NewApplicationTrigger()
	shown := make(chan struct{})
	reg, _ := host.Register(bgtask.Builder{Name: "copy", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			for p := uint32(25); p <= 100; p += 25 {
				inst.SetProgress(p)
				<-shown
			}
			return nil
		})})
	reg.OnProgress(func(e bgtask.ProgressEventArgs) {
		fmt.Printf("%d%%\n", e.Progress)
		shown <- struct{}{}
	})
	done := make(chan struct{})
	reg.OnCompleted(func(e bgtask.CompletedEventArgs) { fmt.Println("done at", e.Progress); close(done) })
	_, _ = trigger.Request(context.Background(), nil)
	<-done
	_ = host.Shutdown(context.Background())
	// Output:
	// 25%
	// 50%
	// 75%
	// 100%
	// done at 100
}

// OnCompleted reports each instance's result exactly once: here a panic, recovered.
func ExampleRegistration_OnCompleted() {
	host, e := run(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		panic(fmt.Errorf("disk full: %w", errors.ErrUnsupported))
	})
	var pe *bgtask.PanicError
	fmt.Println(errors.As(e.CheckResult(), &pe), pe)
	fmt.Println(errors.Is(e.CheckResult(), errors.ErrUnsupported))
	_ = host.Shutdown(context.Background())
	// Output:
	// true bgtask: panic: disk full: unsupported operation
	// true
}

// Shutdown cancels running instances with Terminating and waits for them and for their
// Completed events.
func ExampleHost_Shutdown() {
	host, _ := bgtask.NewHost(bgtask.WithPolicy(bgtask.Policy{GracePeriod: time.Second}))
	trigger := bgtask.NewApplicationTrigger()
	running := make(chan struct{})
	reg, _ := host.Register(bgtask.Builder{Name: "watch", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			close(running)
			<-ctx.Done()
			return context.Cause(ctx)
		})})
	reg.OnCompleted(func(e bgtask.CompletedEventArgs) { fmt.Println("completed:", e.Err) })
	_, _ = trigger.Request(context.Background(), nil)
	<-running
	fmt.Println("shutdown:", host.Shutdown(context.Background()))
	// Output:
	// completed: bgtask: canceled: Terminating
	// shutdown: <nil>
}

// A time trigger fires every FreshnessTime on a fixed grid. The policy lowers the minimum
// period so that the example runs in milliseconds.
func ExampleTimeTrigger() {
	host, _ := bgtask.NewHost(bgtask.WithPolicy(bgtask.Policy{MinFreshness: time.Millisecond}))
	ticks := make(chan time.Time, 3)
	reg, err := host.Register(bgtask.Builder{Name: "poll", Trigger: &bgtask.TimeTrigger{FreshnessTime: 20 * time.Millisecond},
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			ticks <- inst.TriggerDetails().(*bgtask.TimeTriggerDetails).ScheduledAt
			return nil
		})})
	if err != nil {
		panic(err)
	}
	first := <-ticks
	second := <-ticks
	third := <-ticks
	reg.Unregister(false)
	// Fires stay on the grid: a late fire does not push the next ones back.
	period := 20 * time.Millisecond
	fmt.Println("on the grid:", second.Sub(first)%period == 0, third.Sub(second)%period == 0)
	_ = host.Shutdown(context.Background())
	// Output:
	// on the grid: true true
}

// Host.Signal reports a system event to every registration waiting for it.
func ExampleHost_Signal() {
	host, _ := bgtask.NewHost()
	done := make(chan struct{})
	_, _ = host.Register(bgtask.Builder{Name: "upload queued files",
		Trigger: &bgtask.SystemTrigger{Type: bgtask.SystemTriggerInternetAvailable},
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			fmt.Println("fired by", inst.TriggerDetails().(*bgtask.SystemTriggerDetails).Type)
			close(done)
			return nil
		})})
	host.Signal(bgtask.SystemTriggerInternetAvailable)
	<-done
	_ = host.Shutdown(context.Background())
	// Output:
	// fired by InternetAvailable
}

// A fire while a condition does not hold is held until it does; with
// CancelOnConditionLoss, a running instance is canceled when the condition stops holding.
func ExampleNewCondition() {
	host, _ := bgtask.NewHost()
	online := bgtask.NewCondition(false)
	trigger := bgtask.NewApplicationTrigger()
	reg, _ := host.Register(bgtask.Builder{Name: "sync", Trigger: trigger,
		Conditions: []bgtask.Condition{online}, CancelOnConditionLoss: true,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			fmt.Println("syncing")
			online.Set(false) // the network drops while the task runs
			<-ctx.Done()
			return nil
		})})
	done := make(chan struct{})
	reg.OnCompleted(func(e bgtask.CompletedEventArgs) { fmt.Println("canceled:", e.Reason); close(done) })
	res, _ := trigger.Request(context.Background(), nil)
	fmt.Println("offline, request:", res)
	online.Set(true)
	<-done
	_ = host.Shutdown(context.Background())
	// Output:
	// offline, request: Allowed
	// syncing
	// canceled: ConditionLoss
}

// While the host is suspended, Checkpoint blocks; each suspension an instance lives
// through is counted.
func ExampleHost_Suspend() {
	host, _ := bgtask.NewHost()
	trigger := bgtask.NewApplicationTrigger()
	step := make(chan struct{})
	reg, _ := host.Register(bgtask.Builder{Name: "index", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			for range 2 {
				<-step
				if err := inst.Checkpoint(); err != nil { // blocks while suspended
					return err
				}
			}
			fmt.Println("suspended", inst.SuspendedCount(), "time(s)")
			return nil
		})})
	done := make(chan struct{})
	reg.OnCompleted(func(bgtask.CompletedEventArgs) { close(done) })
	_, _ = trigger.Request(context.Background(), nil)
	host.Suspend()
	res, _ := trigger.Request(context.Background(), nil)
	fmt.Println("request while suspended:", res)
	step <- struct{}{}
	host.Resume()
	step <- struct{}{}
	<-done
	_ = host.Shutdown(context.Background())
	// Output:
	// request while suspended: DisabledByPolicy
	// suspended 1 time(s)
}

// A custom trigger fires when the program's own event source says so, with details of
// its own: here, a channel of file names.
func ExampleCustomTrigger() {
	host, _ := bgtask.NewHost()
	files := make(chan string)
	trigger := &bgtask.CustomTrigger{Watch: func(ctx context.Context, fire func(details any) bgtask.ApplicationTriggerResult) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case name := <-files:
				fire(name)
			}
		}
	}}
	reg, _ := host.Register(bgtask.Builder{Name: "on new file", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			fmt.Println("processing", inst.TriggerDetails())
			return nil
		})})
	done := make(chan struct{})
	reg.OnCompleted(func(bgtask.CompletedEventArgs) { close(done) })
	files <- "report.csv"
	<-done
	_ = host.Shutdown(context.Background()) // stops Watch
	// Output:
	// processing report.csv
}

// Arg reads one argument of the Request that started the instance, as the type the task
// expects; a missing key or another type is an error that says which.
func ExampleArg() {
	host, _ := bgtask.NewHost()
	trigger := bgtask.NewApplicationTrigger()
	_, _ = host.Register(bgtask.Builder{Name: "fetch", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			url, err := bgtask.Arg[string](inst, "url")
			if err != nil {
				return err
			}
			fmt.Println("fetching", url)
			_, err = bgtask.Arg[int](inst, "url")
			fmt.Println(err)
			fmt.Println(errors.Is(err, bgtask.ErrInvalidArgument))
			return nil
		})})
	_, _, _ = trigger.RequestAndWait(context.Background(), map[string]any{"url": "https://example.com/file"})
	_ = host.Shutdown(context.Background())
	// Output:
	// fetching https://example.com/file
	// bgtask: Arg("url"): invalid argument: the argument is of type string, not int
	// true
}

// RequestAndWait fires like Request, then waits for the instance it started and returns
// that instance's Completed event.
func ExampleApplicationTrigger_RequestAndWait() {
	host, _ := bgtask.NewHost()
	trigger := bgtask.NewApplicationTrigger()
	_, _ = host.Register(bgtask.Builder{Name: "resize", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			width, err := bgtask.Arg[int](inst, "width")
			if err == nil && width <= 0 {
				err = fmt.Errorf("width %d: %w", width, errors.ErrUnsupported)
			}
			return err
		})})
	for _, width := range []int{640, -1} {
		e, res, err := trigger.RequestAndWait(context.Background(), map[string]any{"width": width})
		fmt.Println(res, err, e.CheckResult())
	}
	_ = host.Shutdown(context.Background())
	// Output:
	// Allowed <nil> <nil>
	// Allowed <nil> width -1: unsupported operation
}

// Instances shows what runs now. Here Run has returned but a deferral is outstanding, so
// the instance is Draining until the deferral is completed.
func ExampleHost_Instances() {
	host, _ := bgtask.NewHost()
	trigger := bgtask.NewApplicationTrigger()
	deferral := make(chan *bgtask.Deferral, 1)
	proceed := make(chan struct{})
	reg, _ := host.Register(bgtask.Builder{Name: "upload", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.SetProgress(40)
			deferral <- inst.GetDeferral() // the upload goes on after Run returns
			<-proceed
			return nil
		})})
	done := make(chan struct{})
	reg.OnCompleted(func(bgtask.CompletedEventArgs) { close(done) })
	_, _ = trigger.Request(context.Background(), nil)
	d := <-deferral
	info := host.Instances()[0]
	fmt.Println(info.Task.Name(), info.State, info.Progress, len(info.Deferrals))
	close(proceed) // Run returns: the instance drains until the deferral is complete
	d.Complete()
	<-done
	fmt.Println(len(host.Instances()))
	_ = host.Shutdown(context.Background())
	// Output:
	// upload Running 40 1
	// 0
}

// CancelInstance cancels one instance, with a reason the program chooses; the others run
// on.
func ExampleHost_CancelInstance() {
	host, _ := bgtask.NewHost()
	trigger := bgtask.NewApplicationTrigger()
	ids := make(chan uuid.UUID, 1)
	reg, _ := host.Register(bgtask.Builder{Name: "index", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			ids <- inst.InstanceID()
			<-ctx.Done()
			return context.Cause(ctx)
		})})
	done := make(chan struct{})
	reg.OnCompleted(func(e bgtask.CompletedEventArgs) {
		fmt.Println("completed, canceled:", e.Canceled, e.Reason)
		close(done)
	})
	_, _ = trigger.Request(context.Background(), nil)
	id := <-ids
	fmt.Println("canceled:", host.CancelInstance(id, bgtask.ServicingUpdate))
	<-done
	fmt.Println("again:", host.CancelInstance(id, bgtask.ServicingUpdate))
	_ = host.Shutdown(context.Background())
	// Output:
	// canceled: true
	// completed, canceled: true ServicingUpdate
	// again: false
}

// With deferral sites on, each outstanding deferral says where it was taken: the place to
// look when an instance does not finish.
func ExampleWithDeferralSites() {
	host, _ := bgtask.NewHost(bgtask.WithDeferralSites(true))
	trigger := bgtask.NewApplicationTrigger()
	taken, release := make(chan struct{}), make(chan struct{})
	reg, _ := host.Register(bgtask.Builder{Name: "sync", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			d := inst.GetDeferral() // recorded as "example_test.go:<this line>"
			defer d.Complete()
			close(taken)
			<-release
			return nil
		})})
	done := make(chan struct{})
	reg.OnCompleted(func(bgtask.CompletedEventArgs) { close(done) })
	_, _ = trigger.Request(context.Background(), nil)
	<-taken
	site := host.Instances()[0].Deferrals[0].Site
	fmt.Println(strings.HasPrefix(site, "example_test.go:"))
	close(release)
	<-done
	_ = host.Shutdown(context.Background())
	// Output:
	// true
}

// A task that ignores cancellation is terminated after the grace period; Shutdown's
// *ShutdownError names what it left behind.
func ExampleShutdownError() {
	host, _ := bgtask.NewHost(bgtask.WithPolicy(bgtask.Policy{GracePeriod: 10 * time.Millisecond}),
		bgtask.WithLogger(nil)) // the termination is logged as a warning otherwise
	trigger := bgtask.NewApplicationTrigger()
	running, release, exited := make(chan struct{}), make(chan struct{}), make(chan struct{})
	_, _ = host.Register(bgtask.Builder{Name: "stubborn", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			d := inst.GetDeferral()
			go func() { // ignores ctx
				defer close(exited)
				<-release
				d.Complete()
			}()
			close(running)
			return nil
		})})
	_, _ = trigger.Request(context.Background(), nil)
	<-running
	err := host.Shutdown(context.Background())
	var se *bgtask.ShutdownError
	if errors.As(err, &se) {
		fmt.Println(len(se.Instances), se.Instances[0].State, len(se.Instances[0].Deferrals))
	}
	fmt.Println(errors.Is(err, bgtask.ErrTerminated))
	close(release) // the program's own goroutine is still its to stop
	<-exited
	// Output:
	// 1 Terminated 1
	// true
}

// The context given to Run ends with the instance: a goroutine the task started and left
// waiting on it is told, with the cause ErrFinished.
func ExampleBackgroundTaskInstance_Context() {
	causes := make(chan error, 1)
	host, e := run(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		go func() {
			<-inst.Context().Done() // the same ctx as Run's
			causes <- context.Cause(inst.Context())
		}()
		return nil
	})
	fmt.Println("completed:", e.Err)
	cause := <-causes
	fmt.Println(errors.Is(cause, bgtask.ErrFinished), cause)
	_ = host.Shutdown(context.Background())
	// Output:
	// completed: <nil>
	// true bgtask: instance finished
}

// A program's metrics read the host's event stream: here, completions counted by
// outcome and reason, as a counter vector of a metrics library would be fed.
func ExampleHost_Subscribe() {
	host, err := bgtask.NewHost()
	if err != nil {
		panic(err)
	}
	var mu sync.Mutex
	completions := map[string]int{} // a metrics library's counter, labeled by outcome
	stop := host.Subscribe(func(e bgtask.Event) {
		outcome := "ok"
		switch {
		case e.Result.Canceled:
			outcome = "canceled:" + e.Result.Reason.String()
		case e.Result.Err != nil:
			outcome = "error"
		}
		mu.Lock()
		completions[outcome]++
		mu.Unlock()
	}, bgtask.EventCompleted)
	defer stop()

	trigger := bgtask.NewApplicationTrigger()
	_, err = host.Register(bgtask.Builder{
		Name:    "job",
		Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			switch mode, _ := bgtask.Arg[string](inst, "mode"); mode {
			case "fail":
				return errors.New("it failed")
			case "cancel":
				host.CancelInstance(inst.InstanceID(), bgtask.Abort)
				return context.Cause(ctx)
			}
			return nil
		}),
	})
	if err != nil {
		panic(err)
	}
	for _, mode := range []string{"ok", "ok", "fail", "cancel"} {
		if _, _, err := trigger.RequestAndWait(context.Background(), map[string]any{"mode": mode}); err != nil {
			panic(err)
		}
	}
	if err := host.Shutdown(context.Background()); err != nil { // waits for the events queued
		panic(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, k := range slices.Sorted(maps.Keys(completions)) {
		fmt.Println(k, completions[k])
	}
	// Output:
	// canceled:Abort 1
	// error 1
	// ok 2
}

package bgtask_test

import (
	"context"
	"errors"
	"fmt"
	"time"

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
// when it runs.
func ExampleBackgroundTaskInstance_OnCanceled() {
	host, _ := bgtask.NewHost()
	trigger := bgtask.NewApplicationTrigger()
	running := make(chan struct{})
	reg, _ := host.Register(bgtask.Builder{Name: "sync", Trigger: trigger,
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			d := inst.GetDeferral()
			inst.OnCanceled(func(inst bgtask.BackgroundTaskInstance, reason bgtask.CancellationReason) {
				fmt.Println("canceled:", reason, "- context:", inst.Context().Err())
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
	// canceled: LoggingOff - context: context canceled
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

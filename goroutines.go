package bgtask

import (
	"context"
	"reflect"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// countdown is a count that waiters can watch go down: the one wait-for-zero of the
// package, used for the live instances and for the library's goroutines. Its owner's lock
// guards it.
type countdown struct {
	n       int
	lowered chan struct{} // closed at the next decrease; made by a waiter
}

func (c *countdown) add(d int) {
	c.n += d
	if d < 0 {
		c.wake()
	}
}

// wake wakes the waiters, to look again.
func (c *countdown) wake() {
	if c.lowered != nil {
		close(c.lowered)
		c.lowered = nil
	}
}

// waitAtMost waits until c counts at most n(), or ctx ends. lock and unlock take and
// release c's owner's lock, which the caller does not hold and n is called with.
func (c *countdown) waitAtMost(ctx context.Context, lock, unlock func(), n func() int) error {
	for {
		lock()
		if c.n <= n() {
			unlock()
			return nil
		}
		if c.lowered == nil {
			c.lowered = make(chan struct{})
		}
		lowered := c.lowered
		unlock()
		select {
		case <-lowered:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// tracker keeps the goroutines the library starts, so that Shutdown can wait for them and
// name those that run user code when it gives up. Its zero value is ready to use.
type tracker struct {
	mu    sync.Mutex
	count countdown
	jobs  job // the ring of running jobs; jobs itself is not one
	// inShutdown counts the jobs blocked in Host.Shutdown, called from a callback: Shutdown
	// cannot wait for them.
	inShutdown int
}

// wait waits until no job runs but those blocked in Shutdown, or ctx ends. self says that
// the caller is such a job.
func (t *tracker) wait(ctx context.Context, self bool) error {
	if self {
		t.mu.Lock()
		t.inShutdown++
		t.count.wake() // the other callers in Shutdown wait for one job less
		t.mu.Unlock()
		defer func() {
			t.mu.Lock()
			t.inShutdown--
			t.mu.Unlock()
		}()
	}
	return t.count.waitAtMost(ctx, t.mu.Lock, t.mu.Unlock, func() int { return t.inShutdown })
}

// job is one goroutine of the library, or one stretch of a task's goroutine that delivers
// events for the library. calling names the user code it runs now (nil between calls).
type job struct {
	reg        *Registration // whose code it runs; nil for the host's own goroutines
	calling    atomic.Pointer[string]
	prev, next *job
}

// begin counts j as running.
func (t *tracker) begin(j *job) {
	t.mu.Lock()
	if t.jobs.next == nil {
		t.jobs.next, t.jobs.prev = &t.jobs, &t.jobs
	}
	j.prev, j.next = t.jobs.prev, &t.jobs
	j.prev.next, t.jobs.prev = j, j
	t.count.add(1)
	t.mu.Unlock()
}

// end stops counting j.
func (t *tracker) end(j *job) {
	t.mu.Lock()
	j.prev.next, j.next.prev = j.next, j.prev
	j.prev, j.next = nil, nil
	t.count.add(-1)
	t.mu.Unlock()
}

// hold counts a piece of the library's work, such as sending an event to the subscribers
// and the log, so that Shutdown waits for it; release ends it. Unlike a job it names no
// callback: the program's code it may run is the log's slog.Handler, which a Stuck list
// does not name.
func (t *tracker) hold() {
	t.mu.Lock()
	t.count.add(1)
	t.mu.Unlock()
}

func (t *tracker) release() {
	t.mu.Lock()
	t.count.add(-1)
	t.mu.Unlock()
}

// Go runs f on a new goroutine, counted until f returns or calls runtime.Goexit. r is the
// registration whose code f runs, nil for the host's own.
func (t *tracker) Go(r *Registration, f func(j *job)) {
	j := &job{reg: r}
	t.begin(j)
	t.goBegun(j, f)
}

// goBegun runs f on a new goroutine as j, which the caller has begun.
func (t *tracker) goBegun(j *job, f func(j *job)) {
	go func() {
		defer t.end(j)
		f(j)
	}()
}

// stuck names the jobs running user code now or, with all, every job that runs for a
// registration.
func (t *tracker) stuck(all bool) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	for j := t.jobs.next; j != nil && j != &t.jobs; j = j.next {
		what := j.calling.Load()
		switch {
		case what != nil:
		case all && j.reg != nil:
			what = &inDelivery
		default:
			continue
		}
		name := *what
		if j.reg != nil {
			name += " of " + strconv.Quote(j.reg.name)
		}
		names = append(names, name)
	}
	return names
}

// The names of the user code that library goroutines call, for ShutdownError.Stuck.
var (
	inProgressHandler  = "OnProgress handler"
	inCompletedHandler = "OnCompleted handler"
	inCanceledHandler  = "OnCanceled handler"
	inWatch            = "CustomTrigger.Watch"
	inDispatch         = "Dispatcher.Dispatch"
	inConditionStop    = "Condition.Watch's stop func"
	inDelivery         = "event delivery"
)

// callUser calls f, the user code named by what, on job j, and returns f's panic as a
// *PanicError. Every callback on a library goroutine goes through it, so that Shutdown can
// tell when it is called from one (see calledFromCallback). If f calls runtime.Goexit,
// callUser does not return: only the callers' deferred calls run.
func callUser(j *job, what *string, f func()) (err error) {
	j.calling.Store(what)
	defer j.calling.Store(nil)
	return capture(func() error { f(); return nil })
}

// capture calls f and returns its error, or its panic as a *PanicError: the one panic
// capture of the package. If f calls runtime.Goexit, capture does not return: callers that
// must clean up do so in a deferred call, with a result that starts as errGoexit.
func capture(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return f()
}

// callUserName and callHandlerName are the names in stack traces of the two functions
// that call user code on library goroutines; callHandler is generic, hence the prefix.
var (
	callUserName    = runtime.FuncForPC(reflect.ValueOf(callUser).Pointer()).Name()
	callHandlerName = strings.TrimSuffix(callUserName, "callUser") + "callHandler["
)

// calledFromCallback reports whether the calling goroutine is running user code for the
// library: an event or Canceled handler, a CustomTrigger's Watch, a condition's stop func.
// Shutdown uses it not to wait for its own goroutine.
func calledFromCallback() bool {
	pcs := make([]uintptr, 64)
	for {
		n := runtime.Callers(2, pcs)
		if n < len(pcs) {
			pcs = pcs[:n]
			break
		}
		pcs = make([]uintptr, 2*len(pcs))
	}
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		if f.Function == callUserName || strings.HasPrefix(f.Function, callHandlerName) {
			return true
		}
		if !more {
			return false
		}
	}
}

package bgtask

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Match them with [errors.Is]; the errors the library returns wrap them with
// more detail.
var (
	// ErrCanceled is matched by every [*CanceledError]: the instance was canceled.
	ErrCanceled = errors.New("bgtask: canceled")
	// ErrTerminated is matched by the result of an instance that did not finish within its
	// grace period after cancellation (see [TerminatedError]), and by a [*ShutdownError]
	// that lists such an instance.
	ErrTerminated = errors.New("bgtask: terminated")
	// ErrFinished is the cause ([context.Cause]) of an instance's context once the instance
	// has finished or been terminated without being canceled before, and what Checkpoint
	// returns then.
	ErrFinished = errors.New("bgtask: instance finished")
	// ErrHostClosed is returned by [Host.Register] on a host that has been shut down. The
	// other calls do not fail on a closed host: Request answers DisabledByPolicy, Signal,
	// SetCondition, Suspend, Resume and Cancel do nothing, and AllTasks, Lookup and
	// Instances go on answering.
	ErrHostClosed = errors.New("bgtask: host closed")
	// ErrNoTrigger is returned by [Host.Register] for a builder without a trigger.
	ErrNoTrigger = errors.New("bgtask: no trigger")
	// ErrNoTask is returned by [Host.Register] for a builder with neither Task nor
	// TaskEntryPoint; a typed nil Task, such as a nil TaskFunc, counts as none.
	ErrNoTask = errors.New("bgtask: no task")
	// ErrUnknownEntryPoint is returned by [Host.Register] for a TaskEntryPoint that no
	// [WithEntryPoint] option bound. It is also matched by the result (Err) of each fire of
	// a registration restored from the store whose entry point no WithEntryPoint binds.
	ErrUnknownEntryPoint = errors.New("bgtask: unknown entry point")
	// ErrInvalidFreshness is returned by [Host.Register] for a [TimeTrigger] whose
	// FreshnessTime is not positive or is below [Policy].MinFreshness.
	ErrInvalidFreshness = errors.New("bgtask: invalid freshness time")
	// ErrNotRegistered is returned by [ApplicationTrigger.Request] for a trigger that was
	// never passed to [Host.Register].
	ErrNotRegistered = errors.New("bgtask: trigger not registered")
	// ErrInvalidArgument is wrapped by the errors for other bad input: an empty name, a
	// negative duration, an unknown trigger or condition type, a nil condition, a nil
	// context, and [Arg] asked for what the instance does not have.
	ErrInvalidArgument = errors.New("bgtask: invalid argument")
)

// errGoexit is the result of Run or a Go func that called [runtime.Goexit], as
// testing.T.FailNow does.
var errGoexit = errors.New("bgtask: runtime.Goexit called")

// wrapped is an error that matches a sentinel and says more, with the "bgtask: " prefix
// once, at its start.
type wrapped struct {
	sentinel error
	msg      string
}

func (e *wrapped) Error() string { return e.msg }
func (e *wrapped) Unwrap() error { return e.sentinel }

// errorf returns an error matching sentinel, worded "bgtask: <subject>: <the sentinel's
// words>[: <detail>]": errorf(ErrNoTrigger, `registration "x"`, "") is
// `bgtask: registration "x": no trigger`.
func errorf(sentinel error, subject, detail string) error {
	msg := "bgtask: "
	if subject != "" {
		msg += subject + ": "
	}
	msg += strings.TrimPrefix(sentinel.Error(), "bgtask: ")
	if detail != "" {
		msg += ": " + detail
	}
	return &wrapped{sentinel: sentinel, msg: msg}
}

// invalidf returns an error wrapping [ErrInvalidArgument] about subject, with the detail
// formatted from format and args.
func invalidf(subject, format string, args ...any) error {
	return errorf(ErrInvalidArgument, subject, fmt.Sprintf(format, args...))
}

// CanceledError is the cause of a canceled instance's context ([context.Cause]) and tells
// why it was canceled. It matches [ErrCanceled].
type CanceledError struct {
	Reason CancellationReason
}

// Error returns "bgtask: canceled: " and the reason.
func (e *CanceledError) Error() string { return "bgtask: canceled: " + e.Reason.String() }

// Is reports whether target is [ErrCanceled].
func (e *CanceledError) Is(target error) bool { return target == ErrCanceled }

// PanicError is the result of an instance whose Run, or a func given to
// [BackgroundTaskInstance.Go], panicked. Value is what was passed to panic and Stack the
// stack of the goroutine that panicked.
type PanicError struct {
	Value any
	Stack []byte
}

// Error returns "bgtask: panic: " and the value; the stack is in Stack.
func (e *PanicError) Error() string { return fmt.Sprintf("bgtask: panic: %v", e.Value) }

// Unwrap returns Value when it is an error, so that [errors.Is] sees through the panic.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// TerminatedError is the result of an instance that was canceled and had not finished when
// its grace period ended. It matches [ErrTerminated] and unwraps to the [*CanceledError]
// and to the first error the instance reported before, if any. Its zero value prints.
//
// Go cannot stop a goroutine from outside: the task's goroutines may still be running. The
// fields say what was left, so that the leak can be found.
type TerminatedError struct {
	Canceled    *CanceledError
	RunReturned bool  // whether Run had returned
	Deferrals   int   // deferrals not completed, those held by Go funcs included
	GoRunning   int   // funcs started with Go that had not returned
	Err         error // the first error reported before termination, or nil
	// Outstanding lists the deferrals left, oldest first, with where they were taken when
	// [WithDeferralSites] is on.
	Outstanding []DeferralInfo
}

// Error says why the instance was canceled and what was left running, with the sites of
// the deferrals left when they are known.
func (e *TerminatedError) Error() string {
	var b strings.Builder
	b.WriteString("bgtask: terminated")
	if e.Canceled != nil {
		b.WriteString(" after " + e.Canceled.Reason.String())
	}
	if e.RunReturned {
		b.WriteString(": Run had returned")
	} else {
		b.WriteString(": Run had not returned")
	}
	fmt.Fprintf(&b, ", %d deferral(s) outstanding, %d Go func(s) running", e.Deferrals, e.GoRunning)
	if sites := siteList(e.Outstanding); sites != "" {
		b.WriteString(" (taken at " + sites + ")")
	}
	if e.Err != nil {
		fmt.Fprintf(&b, "; earlier error: %v", e.Err)
	}
	return b.String()
}

// Is reports whether target is [ErrTerminated].
func (e *TerminatedError) Is(target error) bool { return target == ErrTerminated }

// Unwrap returns the cancellation and the earlier error, those that are set.
func (e *TerminatedError) Unwrap() []error {
	var errs []error
	if e.Canceled != nil {
		errs = append(errs, e.Canceled)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// siteList joins the known sites of ds, "" when none is known.
func siteList(ds []DeferralInfo) string {
	var sites []string
	for _, d := range ds {
		if d.Site != "" {
			sites = append(sites, d.Site)
		}
	}
	return strings.Join(sites, ", ")
}

// ShutdownError is what [Host.Shutdown] returns when it does not return nil: what it left
// behind. It matches [ErrTerminated] when one of Instances was terminated, and unwraps to
// Err. Its zero value prints.
type ShutdownError struct {
	// Err is ctx.Err() when the context given to Shutdown ended first, else nil.
	Err error
	// Instances are the instances terminated during Shutdown, those terminated earlier whose
	// goroutines still run, and, when ctx ended first, those still running (abandoned), each
	// once, oldest first. Each is described as it is when Shutdown returns: a Shutdown
	// called again names the same instances terminated, and no longer says that their
	// goroutines run once they returned.
	Instances []InstanceInfo
	// Stuck names the library goroutines still running user code when ctx ended, such as
	// `OnCompleted handler of "sync"` or `CustomTrigger.Watch of "feed"`, and the one
	// Shutdown was called from, if any.
	Stuck []string
}

// Error names the cause and every instance and goroutine left, one per line.
func (e *ShutdownError) Error() string {
	var b strings.Builder
	b.WriteString("bgtask: shutdown incomplete")
	if e.Err != nil {
		b.WriteString(" (" + e.Err.Error() + ")")
	}
	for _, in := range e.Instances {
		b.WriteString("\n\t" + in.describe())
	}
	for _, s := range e.Stuck {
		b.WriteString("\n\tstuck: " + s)
	}
	return b.String()
}

// Is reports whether target is [ErrTerminated] and an instance listed was terminated.
func (e *ShutdownError) Is(target error) bool {
	if target != ErrTerminated {
		return false
	}
	for _, in := range e.Instances {
		if in.State == InstanceTerminated {
			return true
		}
	}
	return false
}

// Unwrap returns Err.
func (e *ShutdownError) Unwrap() error { return e.Err }

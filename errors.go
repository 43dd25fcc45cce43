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
	// grace period after cancellation (see [TerminatedError]).
	ErrTerminated = errors.New("bgtask: terminated")
	// ErrHostClosed is returned by calls on a host that has been shut down.
	ErrHostClosed = errors.New("bgtask: host closed")
	// ErrNoTrigger is returned by [Host.Register] for a builder without a trigger.
	ErrNoTrigger = errors.New("bgtask: no trigger")
	// ErrNoTask is returned by [Host.Register] for a builder with neither Task nor
	// TaskEntryPoint.
	ErrNoTask = errors.New("bgtask: no task")
	// ErrUnknownEntryPoint is returned by [Host.Register] for a TaskEntryPoint that no
	// [WithEntryPoint] option bound.
	ErrUnknownEntryPoint = errors.New("bgtask: unknown entry point")
	// ErrInvalidFreshness is returned by [Host.Register] for a [TimeTrigger] whose
	// FreshnessTime is not positive or is below [Policy].MinFreshness.
	ErrInvalidFreshness = errors.New("bgtask: invalid freshness time")
	// ErrNotRegistered is returned by [ApplicationTrigger.Request] for a trigger that was
	// never passed to [Host.Register].
	ErrNotRegistered = errors.New("bgtask: trigger not registered")
	// ErrInvalidArgument is wrapped by the errors for other bad input: an empty name, a
	// negative duration, an unknown trigger or condition type, a nil condition.
	ErrInvalidArgument = errors.New("bgtask: invalid argument")
)

// invalidf returns an error wrapping [ErrInvalidArgument].
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, args...)...)
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
// and to the first error the instance reported before, if any.
//
// Go cannot stop a goroutine from outside: the task's goroutines may still be running. The
// fields say what was left, so that the leak can be found.
type TerminatedError struct {
	Canceled    *CanceledError
	RunReturned bool  // whether Run had returned
	Deferrals   int   // deferrals not completed, those held by Go funcs included
	GoRunning   int   // funcs started with Go that had not returned
	Err         error // the first error reported before termination, or nil
}

// Error says why the instance was canceled and what was left running.
func (e *TerminatedError) Error() string {
	var b strings.Builder
	b.WriteString("bgtask: terminated after ")
	b.WriteString(e.Canceled.Reason.String())
	if e.RunReturned {
		b.WriteString(": Run had returned")
	} else {
		b.WriteString(": Run had not returned")
	}
	fmt.Fprintf(&b, ", %d deferral(s) outstanding, %d Go func(s) running", e.Deferrals, e.GoRunning)
	if e.Err != nil {
		fmt.Fprintf(&b, "; earlier error: %v", e.Err)
	}
	return b.String()
}

// Is reports whether target is [ErrTerminated].
func (e *TerminatedError) Is(target error) bool { return target == ErrTerminated }

// Unwrap returns the cancellation and the earlier error, if any.
func (e *TerminatedError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Canceled}
	}
	return []error{e.Canceled, e.Err}
}

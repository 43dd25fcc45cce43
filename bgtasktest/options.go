package bgtasktest

import (
	"fmt"
	"time"

	"github.com/bgtask-go/bgtask"
)

// Option configures one [Run]. Run checks its options before it starts anything: a bad one,
// or one given twice, fails the test with [testing.TB.Fatalf]. The zero Option is bad.
type Option struct {
	apply func(*config) error
}

// config is what the options of one Run say.
type config struct {
	seen       map[string]bool
	detailsBy  string // the option that set the details: "WithArgs", "WithDetails" or ""
	args       map[string]any
	details    any
	policy     bgtask.Policy
	atProgress *progressCancel
	after      *timeCancel
}

// progressCancel is what CancelAtProgress asks for.
type progressCancel struct {
	at     uint32
	reason bgtask.CancellationReason
}

// timeCancel is what CancelAfter asks for.
type timeCancel struct {
	after  time.Duration
	reason bgtask.CancellationReason
}

// WithArgs starts the instance with a [bgtask.ApplicationTrigger] Request of args: its
// TriggerDetails are an [*bgtask.ApplicationTriggerDetails] holding a copy of args, which
// [bgtask.Arg] reads. It cannot be given with [WithDetails]. Default: a Request with nil
// args.
func WithArgs(args map[string]any) Option {
	return Option{func(c *config) error {
		if err := c.setDetails("WithArgs"); err != nil {
			return err
		}
		c.args = args
		return nil
	}}
}

// WithDetails starts the instance with d as its TriggerDetails, as a [bgtask.CustomTrigger]
// passes them: d is handed to the task as it is, not copied. Use it for a
// [*bgtask.TimeTriggerDetails], a [*bgtask.SystemTriggerDetails] or a value of the
// program's own; d may be nil. It cannot be given with [WithArgs]. Default: see WithArgs.
func WithDetails(d any) Option {
	return Option{func(c *config) error {
		if err := c.setDetails("WithDetails"); err != nil {
			return err
		}
		c.details = d
		return nil
	}}
}

// WithPolicy sets the policy of the host the instance runs on; [bgtask.NewHost] checks it.
// Its GracePeriod also bounds how long Run waits for that host to shut down. Default: the
// zero Policy, as a host made without options has: no time limit and a 5s grace period.
func WithPolicy(p bgtask.Policy) Option {
	return Option{func(c *config) error {
		if err := c.once("WithPolicy"); err != nil {
			return err
		}
		c.policy = p
		return nil
	}}
}

// CancelAtProgress cancels the instance with reason the first time the task calls
// SetProgress with a value of at least p. The cancellation happens inside that call, on
// the task's goroutine: when
// SetProgress returns, the instance's context is done, so a task that checks it next sees
// it at once, every run. The Canceled handlers run later, on a goroutine of the library,
// as always. reason must be one of the [bgtask.CancellationReason] constants. Default: no
// cancellation at any progress.
func CancelAtProgress(p uint32, reason bgtask.CancellationReason) Option {
	return Option{func(c *config) error {
		if err := c.once("CancelAtProgress"); err != nil {
			return err
		}
		if err := checkReason(reason); err != nil {
			return err
		}
		c.atProgress = &progressCancel{at: p, reason: reason}
		return nil
	}}
}

// CancelAfter cancels the instance with reason once d has passed since the task's Run was
// called, on the clock of the host: inside a [testing/synctest] bubble, the bubble's fake
// clock, so that d passes as soon as every goroutine of the bubble is blocked. The
// cancellation runs on the timer's goroutine. With d 0 the instance is canceled before the
// task's Run is called, which starts with its context done. d must not be negative, and
// reason must be one of the [bgtask.CancellationReason] constants. Default: no
// cancellation after any time.
func CancelAfter(d time.Duration, reason bgtask.CancellationReason) Option {
	return Option{func(c *config) error {
		if err := c.once("CancelAfter"); err != nil {
			return err
		}
		if d < 0 {
			return fmt.Errorf("CancelAfter: negative duration %v", d)
		}
		if err := checkReason(reason); err != nil {
			return err
		}
		c.after = &timeCancel{after: d, reason: reason}
		return nil
	}}
}

// newConfig applies opts in order and returns the first error.
func newConfig(opts []Option) (*config, error) {
	c := &config{seen: make(map[string]bool)}
	for k, o := range opts {
		if o.apply == nil {
			return nil, fmt.Errorf("option %d is the zero Option", k)
		}
		if err := o.apply(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// once fails for an option given twice: which one wins would be a guess.
func (c *config) once(name string) error {
	if c.seen[name] {
		return fmt.Errorf("%s given twice", name)
	}
	c.seen[name] = true
	return nil
}

// setDetails fails when the details were set before: an instance has one set of them.
func (c *config) setDetails(name string) error {
	if c.detailsBy != "" {
		return fmt.Errorf("%s after %s: an instance has one set of trigger details", name, c.detailsBy)
	}
	c.detailsBy = name
	return nil
}

// checkReason fails for a reason that is not one of the constants.
func checkReason(r bgtask.CancellationReason) error {
	if r < bgtask.Abort || r > bgtask.EnergySaver {
		return fmt.Errorf("unknown cancellation reason %v", r)
	}
	return nil
}

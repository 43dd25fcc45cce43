package bgtask

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"strconv"
	"sync"
)

// Trigger decides when a registration's task runs. The triggers are [*ApplicationTrigger],
// [*TimeTrigger], [*SystemTrigger] and [*CustomTrigger], through which a program writes
// its own. A trigger value may serve several registrations, and each of them fires.
type Trigger interface {
	// attach links r to the trigger; Register calls it with the host's lock held, after
	// validate succeeded.
	attach(r *Registration)
	// detach undoes attach; called with the host's lock held.
	detach(r *Registration)
	// validate checks the trigger against the host's policy.
	validate(p *Policy) error
	// oneShot reports whether the registration ends when its first instance starts;
	// Register reads it once.
	oneShot() bool
	// isNil reports whether the trigger is a nil pointer.
	isNil() bool
}

// ApplicationTriggerResult is the answer of [ApplicationTrigger.Request].
type ApplicationTriggerResult int

const (
	// Allowed: the fire was accepted; the instance was started, or is held by a condition
	// or by [Policy].MaxConcurrent and starts as soon as it can.
	Allowed ApplicationTriggerResult = 0
	// CurrentlyRunning: an instance of the registration is still running.
	CurrentlyRunning ApplicationTriggerResult = 1
	// DisabledByPolicy: the host is shut down or suspended, or the trigger's registrations
	// are all gone.
	DisabledByPolicy ApplicationTriggerResult = 2
	// UnknownError: Request returned an error.
	UnknownError ApplicationTriggerResult = 3
)

var resultNames = [...]string{"Allowed", "CurrentlyRunning", "DisabledByPolicy", "UnknownError"}

// String returns the result's name, such as "Allowed".
func (r ApplicationTriggerResult) String() string {
	if r >= 0 && int(r) < len(resultNames) {
		return resultNames[r]
	}
	return "ApplicationTriggerResult(" + strconv.Itoa(int(r)) + ")"
}

// ApplicationTrigger starts its registrations' tasks when the program calls Request. It is
// safe for concurrent use; its zero value is usable, like [NewApplicationTrigger]'s.
// Register reads OneShot; changing it later does not change the registrations made.
type ApplicationTrigger struct {
	// OneShot unregisters each registration when its first instance starts.
	OneShot bool

	mu   sync.Mutex
	used bool            // passed to Register at least once
	regs []*Registration // replaced, never changed in place, so Request reads it unlocked
}

// NewApplicationTrigger returns a new application trigger.
func NewApplicationTrigger() *ApplicationTrigger { return new(ApplicationTrigger) }

// Request fires every registration of the trigger with a copy of args as its
// [ApplicationTriggerDetails]. It returns once each fire is accepted or refused and does
// not wait for a task. Refusals are results, not errors: with several registrations the
// result is Allowed if any accepted, else CurrentlyRunning if any was running, else
// DisabledByPolicy. A fire held by a condition or by [Policy].MaxConcurrent is Allowed,
// and a second Request while it is held is Allowed too: the held fire then carries the
// latest args. The error is ctx's error, or [ErrNotRegistered] for a trigger never passed
// to [Host.Register]; whenever it is not nil the result is UnknownError.
func (t *ApplicationTrigger) Request(ctx context.Context, args map[string]any) (ApplicationTriggerResult, error) {
	if err := ctx.Err(); err != nil {
		return UnknownError, err
	}
	if t == nil {
		return UnknownError, ErrNotRegistered
	}
	t.mu.Lock()
	regs, used := t.regs, t.used
	t.mu.Unlock()
	if !used {
		return UnknownError, ErrNotRegistered
	}
	res := DisabledByPolicy
	for _, r := range regs {
		// The results are ordered from best to worst, so the best answer is the least.
		res = min(res, r.host.fire(r, &ApplicationTriggerDetails{Arguments: maps.Clone(args)}, true))
	}
	return res, nil
}

func (t *ApplicationTrigger) attach(r *Registration) {
	t.mu.Lock()
	t.used = true
	t.regs = append(t.regs[:len(t.regs):len(t.regs)], r)
	t.mu.Unlock()
}

func (t *ApplicationTrigger) detach(r *Registration) {
	t.mu.Lock()
	t.regs = removeReg(t.regs, r)
	t.mu.Unlock()
}

func (t *ApplicationTrigger) validate(*Policy) error { return nil }
func (t *ApplicationTrigger) oneShot() bool          { return t.OneShot }
func (t *ApplicationTrigger) isNil() bool            { return t == nil }

// removeReg returns a new slice without r, leaving regs as it was for its readers.
func removeReg(regs []*Registration, r *Registration) []*Registration {
	out := make([]*Registration, 0, len(regs))
	for _, x := range regs {
		if x != r {
			out = append(out, x)
		}
	}
	return out
}

// CustomTrigger is a trigger the program writes: Watch decides when to fire, and with
// what details. Like the library's triggers, one value may serve several registrations.
// Register reads the fields; changing them later does not change the registrations made.
type CustomTrigger struct {
	// Watch runs once per registration, on a goroutine of the host, from Register until
	// the registration is unregistered or the host shuts down; ctx is then done, and Watch
	// must return. It calls fire to start the task; the instance's TriggerDetails are the
	// details given. fire may be called from any goroutine; it takes the host's lock
	// briefly, does not wait for the task, and answers as Request would, but a fire while the
	// instance runs, the host is suspended or a condition does not hold is held rather than
	// refused: several held fires start one instance, with the latest details. A panic in
	// Watch is recovered and logged, as is an error it returns before ctx is done; either
	// way the registration no longer fires. Required.
	Watch func(ctx context.Context, fire func(details any) ApplicationTriggerResult) error
	// OneShot unregisters each registration when its first instance starts.
	OneShot bool
}

func (t *CustomTrigger) attach(r *Registration) {
	h := r.host
	ctx, cancel := context.WithCancel(context.Background())
	r.stopWatch = cancel
	fire := func(details any) ApplicationTriggerResult { return h.fire(r, details, false) }
	h.lib.Go(func() {
		err := protect(func() error { return t.Watch(ctx, fire) })
		var pe *PanicError
		if panicked := errors.As(err, &pe); panicked || err != nil && ctx.Err() == nil {
			attrs := append(r.attrs(), slog.String("err", err.Error()))
			if panicked {
				attrs = append(attrs, slog.String("stack", string(pe.Stack)))
			}
			h.log.Error("bgtask: custom trigger stopped", attrs...)
		}
	})
}

func (t *CustomTrigger) detach(*Registration) {} // Host.quietLocked cancels Watch's ctx

func (t *CustomTrigger) validate(*Policy) error {
	if t.Watch == nil {
		return invalidf("CustomTrigger without Watch")
	}
	return nil
}

func (t *CustomTrigger) oneShot() bool { return t.OneShot }
func (t *CustomTrigger) isNil() bool   { return t == nil }

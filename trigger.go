package bgtask

import (
	"github.com/google/uuid"

	"context"
	"errors"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Trigger decides when a registration's task runs. The triggers are [*ApplicationTrigger],
// [*TimeTrigger], [*SystemTrigger] and [*CustomTrigger], through which a program writes
// its own. A trigger value may serve several registrations, and each of them fires.
// Register reads a trigger's fields once: changing them later does not change the
// registrations made.
type Trigger interface {
	// settings returns the trigger's fields, as Register reads them.
	settings() triggerSettings
	// attach links r to the trigger; Register calls it with the host's lock held.
	attach(r *Registration)
	// detach undoes attach; called with the host's lock held.
	detach(r *Registration)
}

// triggerSettings are a trigger's fields, read once by Register.
type triggerSettings struct {
	kind    triggerKind
	oneShot bool
	period  time.Duration                                                            // TimeTrigger
	sysType SystemTriggerType                                                        // SystemTrigger
	watch   func(ctx context.Context, fire func(any) ApplicationTriggerResult) error // CustomTrigger
}

type triggerKind int

const (
	applicationKind triggerKind = iota
	timeKind
	systemKind
	customKind
)

// validate checks the settings against the host's policy.
func (s *triggerSettings) validate(subject string, p *Policy) error {
	switch {
	case s.kind == customKind && s.watch == nil:
		return invalidf(subject, "CustomTrigger without Watch")
	case s.kind == systemKind && !s.sysType.valid():
		return invalidf(subject, "SystemTrigger with unknown Type %v", s.sysType)
	case s.kind == timeKind && (s.period <= 0 || s.period < p.minFreshness()):
		return errorf(ErrInvalidFreshness, subject, s.period.String()+", the minimum is "+p.minFreshness().String())
	}
	return nil
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
// not wait for a task (see [ApplicationTrigger.RequestAndWait]). Refusals are results, not
// errors: with several registrations the result is Allowed if any accepted, else
// CurrentlyRunning if any was running, else DisabledByPolicy. A fire held by a condition
// or by [Policy].MaxConcurrent is Allowed, and a second Request while it is held is
// Allowed too: the held fire then carries the latest args. The error is ctx's error,
// [ErrNotRegistered] for a trigger never passed to [Host.Register], or one wrapping
// [ErrInvalidArgument] for a nil ctx; whenever it is not nil the result is UnknownError.
func (t *ApplicationTrigger) Request(ctx context.Context, args map[string]any) (ApplicationTriggerResult, error) {
	regs, err := t.registrations(ctx)
	if err != nil {
		return UnknownError, err
	}
	res, _, err := t.fireAll(ctx, regs, args, nil)
	return res, err
}

// RequestAndWait fires like Request and, when the fire is accepted, waits for its outcome:
// the arguments of the Completed event that the fire ends in. For a fire held and then
// started, that is the instance that ran it; for a Request coalesced with a held fire, the
// instance that ran them both, with the latest args; for a held fire dropped by Unregister
// or Shutdown, the event that says so (Canceled, Started zero). With several registrations
// it waits for every accepted fire and returns the outcome of one that failed, if any.
//
// When the fire is refused it returns at once, with the zero CompletedEventArgs and the
// result. When ctx ends while it waits, it returns ctx's error with the result Allowed:
// the fire was accepted and still runs.
func (t *ApplicationTrigger) RequestAndWait(ctx context.Context, args map[string]any) (CompletedEventArgs, ApplicationTriggerResult, error) {
	regs, err := t.registrations(ctx)
	if err != nil {
		return CompletedEventArgs{}, UnknownError, err
	}
	outcomes := make(chan CompletedEventArgs, len(regs))
	res, accepted, err := t.fireAll(ctx, regs, args, outcomes)
	if err != nil {
		return CompletedEventArgs{}, res, err
	}
	var out CompletedEventArgs
	for k := range accepted {
		select {
		case e := <-outcomes:
			if k == 0 || out.Err == nil && e.Err != nil {
				out = e
			}
		case <-ctx.Done():
			return CompletedEventArgs{}, res, ctx.Err()
		}
	}
	return out, res, nil
}

// registrations returns the trigger's registrations, or why it cannot fire.
func (t *ApplicationTrigger) registrations(ctx context.Context) ([]*Registration, error) {
	if ctx == nil {
		return nil, invalidf("Request", "nil context")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if t == nil {
		return nil, ErrNotRegistered
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.used {
		return nil, ErrNotRegistered
	}
	return t.regs, nil
}

// fireAll fires regs and returns the best result and how many accepted. The fires of
// registrations that a Dispatcher takes go to it; its error stops the loop.
func (t *ApplicationTrigger) fireAll(ctx context.Context, regs []*Registration, args map[string]any, outcomes chan<- CompletedEventArgs) (ApplicationTriggerResult, int, error) {
	res, accepted := DisabledByPolicy, 0
	for _, r := range regs {
		details := &ApplicationTriggerDetails{Arguments: maps.Clone(args)}
		var got ApplicationTriggerResult
		if h := r.host; h.dispatched(r) {
			var err error
			if got, err = h.dispatch(ctx, r, details, outcomes, callHere); err != nil {
				return UnknownError, accepted, err
			}
		} else {
			got = h.fire(r, details, true, outcomes)
		}
		if got == Allowed {
			accepted++
		}
		res = min(res, got) // the results are ordered from best to worst
	}
	return res, accepted, nil
}

// String describes the trigger: "ApplicationTrigger", and " once" when OneShot.
func (t *ApplicationTrigger) String() string { return t.settings().String() }

// String describes the trigger, such as "TimeTrigger every 15m0s".
func (t *TimeTrigger) String() string { return t.settings().String() }

// String describes the trigger, such as "SystemTrigger InternetAvailable".
func (t *SystemTrigger) String() string { return t.settings().String() }

// String describes the trigger: "CustomTrigger", and " once" when OneShot.
func (t *CustomTrigger) String() string { return t.settings().String() }

// String describes a trigger with these settings (see the triggers' String methods).
func (s triggerSettings) String() string {
	var d string
	switch s.kind {
	case timeKind:
		d = "TimeTrigger every " + s.period.String()
	case systemKind:
		d = "SystemTrigger " + s.sysType.String()
	case customKind:
		d = "CustomTrigger"
	default:
		d = "ApplicationTrigger"
	}
	if s.oneShot {
		d += " once"
	}
	return d
}

func (t *ApplicationTrigger) settings() triggerSettings { return triggerSettings{oneShot: t.OneShot} }

func (t *ApplicationTrigger) attach(r *Registration) {
	t.mu.Lock()
	t.used = true
	t.regs = append(t.regs[:len(t.regs):len(t.regs)], r)
	t.mu.Unlock()
}

func (t *ApplicationTrigger) detach(r *Registration) {
	t.mu.Lock()
	t.regs = slices.DeleteFunc(slices.Clone(t.regs), func(x *Registration) bool { return x == r })
	t.mu.Unlock()
}

// TimeTrigger starts its registrations' tasks every FreshnessTime, the first time
// FreshnessTime after Register. Fires stay on that grid: each is scheduled from the
// previous scheduled time, not from when the last run happened, so no drift accumulates.
// Fires missed while the registration's instance was running, the host was suspended or
// a condition did not hold coalesce into one catch-up fire, which starts as soon as the
// registration is free, with ScheduledAt the latest missed time: never a storm, never an
// overlap.
//
// All time triggers of a host are scheduled by one goroutine of the host, with one timer:
// a registered time trigger costs no goroutine and no timer of its own.
type TimeTrigger struct {
	// FreshnessTime is the period. It must be positive and at least [Policy].MinFreshness.
	FreshnessTime time.Duration
	// OneShot fires once: the registration is unregistered when that instance starts.
	OneShot bool
}

func (t *TimeTrigger) settings() triggerSettings {
	return triggerSettings{kind: timeKind, oneShot: t.OneShot, period: t.FreshnessTime}
}

func (t *TimeTrigger) attach(r *Registration) {
	h := r.host
	if h.sched == nil {
		h.sched = newScheduler()
		h.lib.Go(nil, func(*job) { h.sched.loop(h) })
	}
	h.sched.add(r)
}

func (t *TimeTrigger) detach(r *Registration) {
	if r.sched.index >= 0 {
		r.host.sched.remove(r)
	}
}

// addSat returns a+b for b > 0, or math.MaxInt64 (never) where that would overflow.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// SystemTriggerType is a system event that a [SystemTrigger] waits for and that
// [Host.Signal] raises. The values are those of the Windows SystemTriggerType enumeration.
type SystemTriggerType int

// The system trigger types.
const (
	SystemTriggerUserPresent              SystemTriggerType = 2
	SystemTriggerUserAway                 SystemTriggerType = 3
	SystemTriggerNetworkStateChange       SystemTriggerType = 4
	SystemTriggerInternetAvailable        SystemTriggerType = 6
	SystemTriggerSessionConnected         SystemTriggerType = 7
	SystemTriggerServicingComplete        SystemTriggerType = 8
	SystemTriggerTimeZoneChange           SystemTriggerType = 11
	SystemTriggerBackgroundWorkCostChange SystemTriggerType = 13
	SystemTriggerPowerStateChange         SystemTriggerType = 14
)

var systemTriggerNames = map[SystemTriggerType]string{
	SystemTriggerUserPresent:              "UserPresent",
	SystemTriggerUserAway:                 "UserAway",
	SystemTriggerNetworkStateChange:       "NetworkStateChange",
	SystemTriggerInternetAvailable:        "InternetAvailable",
	SystemTriggerSessionConnected:         "SessionConnected",
	SystemTriggerServicingComplete:        "ServicingComplete",
	SystemTriggerTimeZoneChange:           "TimeZoneChange",
	SystemTriggerBackgroundWorkCostChange: "BackgroundWorkCostChange",
	SystemTriggerPowerStateChange:         "PowerStateChange",
}

// String returns the type's name without its prefix, such as "InternetAvailable", or
// "SystemTriggerType(N)" for a value that is not one of the constants.
func (t SystemTriggerType) String() string {
	if s, ok := systemTriggerNames[t]; ok {
		return s
	}
	return "SystemTriggerType(" + strconv.Itoa(int(t)) + ")"
}

func (t SystemTriggerType) valid() bool { _, ok := systemTriggerNames[t]; return ok }

// SystemTrigger starts its registrations' tasks when the program reports a system event
// with [Host.Signal]. A fire while the registration's instance runs, the host is suspended
// or a condition does not hold is held, and several held fires start one instance.
type SystemTrigger struct {
	Type    SystemTriggerType
	OneShot bool // unregister each registration when its first instance starts
}

func (t *SystemTrigger) settings() triggerSettings {
	return triggerSettings{kind: systemKind, oneShot: t.OneShot, sysType: t.Type}
}

func (t *SystemTrigger) attach(r *Registration) {
	h := r.host
	if h.system == nil {
		h.system = make(map[SystemTriggerType][]*Registration)
	}
	r.sysIndex = len(h.system[r.sysType])
	h.system[r.sysType] = append(h.system[r.sysType], r)
}

func (t *SystemTrigger) detach(r *Registration) {
	h := r.host
	regs := h.system[r.sysType]
	last := len(regs) - 1
	regs[r.sysIndex] = regs[last]
	regs[r.sysIndex].sysIndex = r.sysIndex
	regs[last] = nil
	h.system[r.sysType] = regs[:last]
}

// Signal reports the system event t: every registration with a [SystemTrigger] of that
// type fires (or has its fire held, see SystemTrigger). It does not wait for the tasks.
// Signal on a shut-down host, or with a type that is not one of the constants, does
// nothing.
func (h *Host) Signal(t SystemTriggerType) {
	h.lock()
	defer h.unlock()
	if !h.closed {
		details := &SystemTriggerDetails{Type: t}
		// fireLocked may unregister a OneShot registration, which changes the slice.
		for _, r := range slices.Clone(h.system[t]) {
			h.fireLocked(r, details, false, nil)
		}
	}
}

// CustomTrigger is a trigger the program writes: Watch decides when to fire, and with
// what details. Like the library's triggers, one value may serve several registrations.
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

func (t *CustomTrigger) settings() triggerSettings {
	return triggerSettings{kind: customKind, oneShot: t.OneShot, watch: t.Watch}
}

func (t *CustomTrigger) attach(r *Registration) {
	h := r.host
	ctx, cancel := context.WithCancel(context.Background())
	r.stopWatch = cancel
	fire := func(details any) ApplicationTriggerResult { return h.fire(r, details, false, nil) }
	watch := r.watch
	h.lib.Go(r, func(j *job) {
		err := errGoexit // unless Watch returns
		defer func() { h.watchEnded(r, ctx, err) }()
		if perr := callUser(j, &inWatch, func() { err = watch(ctx, fire) }); perr != nil {
			err = perr
		}
	})
}

func (t *CustomTrigger) detach(*Registration) {} // Host.quietLocked cancels Watch's ctx

// watchEnded logs why a CustomTrigger's Watch returned, unless it was told to.
func (h *Host) watchEnded(r *Registration, ctx context.Context, err error) {
	var pe *PanicError
	switch {
	case errors.As(err, &pe):
		h.logPanic(inWatch, err, r, uuid.Nil)
	case err != nil && ctx.Err() == nil:
		h.problem("custom trigger stopped", err, r, uuid.Nil)
	}
}

package bgtask

import (
	"log/slog"
	"strconv"
)

// Option configures a host in [NewHost]. Options are checked there: a bad one makes
// NewHost fail.
type Option struct {
	apply func(*Host) error
}

// WithPolicy sets the host's resource policy. A negative duration or limit is an error.
// Default: the zero [Policy].
func WithPolicy(p Policy) Option {
	return Option{func(h *Host) error {
		if err := p.validate(); err != nil {
			return err
		}
		h.policy = p
		return nil
	}}
}

// WithLogger sets the host's log, which reads the host's event stream (see [Host.Subscribe]):
// the lifecycle (registered, updated, unregistered, held, launched, canceled, completed,
// suspended, resumed) at Debug; problems at Warn (terminated instances, dropped fires, memory
// pressure, Go calls after the end, other things the host could not do) or Error (panics, in
// Run as in handlers, and store errors). Records carry the task name ("task") and the instance
// id ("instance") where there is one. Which levels the handler enables is read once, by
// NewHost: a log that records only problems, as [slog.Default] does, costs nothing on the hot
// paths. The logger is called on the goroutine where the event happened, never with a lock of
// the library held, so its handler may block (and then delays that goroutine). A nil l
// discards the log. Default: [slog.Default].
func WithLogger(l *slog.Logger) Option {
	return Option{func(h *Host) error {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		h.stream.log = l
		return nil
	}}
}

// WithEntryPoint binds name to t, for a Builder's TaskEntryPoint: a registration that
// names its task rather than holding it. An empty name, a nil t, or a name bound twice is
// an error. Default: no entry points.
func WithEntryPoint(name string, t BackgroundTask) Option {
	return Option{func(h *Host) error {
		subject := "WithEntryPoint(" + strconv.Quote(name) + ")"
		switch {
		case name == "":
			return invalidf("WithEntryPoint", "empty name")
		case isNil(t):
			return invalidf(subject, "nil task")
		case h.entries[name] != nil:
			return invalidf(subject, "bound twice")
		}
		h.entries[name] = t
		return nil
	}}
}

// WithDeferralSites sets whether each deferral records where it was taken (the file and
// line of the call to GetDeferral or Go) and when: [InstanceInfo].Deferrals,
// [TerminatedError].Outstanding and [ShutdownError] then name the place of every deferral
// left. Recording costs a stack walk and a clock read per deferral, several times the cost
// of a plain GetDeferral and Complete (see BenchmarkDeferralSites), which is why it is off
// by default: turn it on while looking for a leak, or in programs that take few deferrals.
// Default: off.
func WithDeferralSites(on bool) Option {
	return Option{func(h *Host) error {
		h.sites = on
		return nil
	}}
}

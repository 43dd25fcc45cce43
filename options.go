package bgtask

import (
	"log/slog"
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

// WithLogger sets where the host logs what it cannot return: panics in event handlers,
// terminated instances, Go calls after the end. Records carry the task name ("task") and
// the instance id ("instance"). The logger is called on the goroutine where the event
// happened, never with a lock of the library held, so its handler may block. A nil l
// discards the log. Default: [slog.Default].
func WithLogger(l *slog.Logger) Option {
	return Option{func(h *Host) error {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		h.log = l
		return nil
	}}
}

// WithEntryPoint binds name to t, for a Builder's TaskEntryPoint: a registration that
// names its task rather than holding it. An empty name, a nil t, or a name bound twice is
// an error. Default: no entry points.
func WithEntryPoint(name string, t BackgroundTask) Option {
	return Option{func(h *Host) error {
		switch {
		case name == "":
			return invalidf("WithEntryPoint: empty name")
		case t == nil:
			return invalidf("WithEntryPoint(%q): nil task", name)
		case h.entries[name] != nil:
			return invalidf("WithEntryPoint(%q): bound twice", name)
		}
		h.entries[name] = t
		return nil
	}}
}

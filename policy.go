package bgtask

import (
	"cmp"
	"time"
)

// Policy is a host's resource policy, given with [WithPolicy]. The zero value means: no
// time limit, a 5s grace period, no idle detection, no concurrency limit, a 1s minimum
// freshness and no memory pressure handling.
type Policy struct {
	// MaxExecutionTime limits each instance's time from its start; when it passes the
	// instance is canceled with [ExecutionTimeExceeded]. It keeps counting while the host
	// is suspended. A Builder's MaxExecutionTime overrides it. 0: no limit.
	MaxExecutionTime time.Duration
	// GracePeriod is how long a canceled instance has to finish before it is terminated
	// (see [TerminatedError]). 0 means the default, 5s.
	GracePeriod time.Duration
	// IdleTimeout cancels, with [IdleTask], an instance that calls neither SetProgress nor
	// Checkpoint for that long. It pauses while the host is suspended. 0: off.
	IdleTimeout time.Duration
	// MaxConcurrent limits how many instances run at once, across registrations; fires
	// beyond it wait their turn, oldest first. 0: no limit.
	MaxConcurrent int
	// MinFreshness is the smallest accepted [TimeTrigger] FreshnessTime. 0 means the
	// default, 1s: a guard against a period written without a unit.
	MinFreshness time.Duration

	// MemoryLimitFraction turns on memory pressure handling. When the Go heap passes this
	// fraction of the runtime's memory limit (debug.SetMemoryLimit or GOMEMLIMIT), the host
	// suspends itself (see [Host.Suspend]); when the pressure lasts MemoryPressurePeriod,
	// it cancels running instances with [ResourceRevocation], the newest first, one at
	// each check, until the heap is below the fraction again, when it resumes. Without a
	// memory limit it never acts. The check runs on one goroutine of the host every
	// MemoryCheckInterval. 0: off; otherwise more than 0 and at most 1.
	MemoryLimitFraction float64
	// MemoryPressurePeriod is how long pressure may last before instances are canceled.
	// 0 means the default, 10s.
	MemoryPressurePeriod time.Duration
	// MemoryCheckInterval is how often the heap is read. 0 means the default, 1s.
	MemoryCheckInterval time.Duration
}

// DefaultGracePeriod is the grace period when [Policy].GracePeriod is 0, as long as
// Windows gives a canceled background task.
const DefaultGracePeriod = 5 * time.Second

// DefaultMinFreshness is the smallest FreshnessTime when [Policy].MinFreshness is 0.
const DefaultMinFreshness = time.Second

func (p *Policy) validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"MaxExecutionTime", p.MaxExecutionTime},
		{"GracePeriod", p.GracePeriod},
		{"IdleTimeout", p.IdleTimeout},
		{"MinFreshness", p.MinFreshness},
		{"MemoryPressurePeriod", p.MemoryPressurePeriod},
		{"MemoryCheckInterval", p.MemoryCheckInterval},
	} {
		if d.v < 0 {
			return invalidf("Policy", "%s is negative (%v)", d.name, d.v)
		}
	}
	if !(p.MemoryLimitFraction >= 0 && p.MemoryLimitFraction <= 1) {
		return invalidf("Policy", "MemoryLimitFraction is %v, not in [0, 1]", p.MemoryLimitFraction)
	}
	if p.MaxConcurrent < 0 {
		return invalidf("Policy", "MaxConcurrent is negative (%d)", p.MaxConcurrent)
	}
	return nil
}

func (p *Policy) grace() time.Duration { return cmp.Or(p.GracePeriod, DefaultGracePeriod) }

func (p *Policy) minFreshness() time.Duration { return cmp.Or(p.MinFreshness, DefaultMinFreshness) }

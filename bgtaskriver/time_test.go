package bgtaskriver_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// period is the tests' time trigger period: the smallest the core takes by default.
const period = time.Second

// slots records the times of the grid that ran, and where.
type slots struct {
	mu  sync.Mutex
	ran map[time.Time][]string // replicas, by ScheduledAt
}

func (s *slots) add(at time.Time, replica string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ran == nil {
		s.ran = make(map[time.Time][]string)
	}
	s.ran[at] = append(s.ran[at], replica)
}

// times returns the times that ran, in order.
func (s *slots) times() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.SortedFunc(maps.Keys(s.ran), time.Time.Compare)
}

// twice returns the times that ran more than once.
func (s *slots) twice() map[time.Time][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Collect(func(yield func(time.Time, []string) bool) {
		for at, rs := range s.ran {
			if len(rs) > 1 && !yield(at, rs) {
				return
			}
		}
	})
}

// timeFleet returns a function that makes replicas with a time trigger every period,
// which record their runs in s, and the channel of those runs.
func timeFleet(t *testing.T, db fleetDB, s *slots, body func(ctx context.Context) error) (func(name string) *replica, <-chan ran) {
	entry, started := runs(func(replica string, ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		s.add(inst.TriggerDetails().(*bgtask.TimeTriggerDetails).ScheduledAt.UTC(), replica)
		if body == nil {
			return nil
		}
		return body(ctx)
	})
	return func(name string) *replica {
		r := db.replica(t, name, bgtaskriver.Config{}, entry(name))
		r.ensure(t, bgtask.Builder{Name: "tick", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: period}})
		r.start(t)
		return r
	}, started
}

// Two replicas Ensure one time trigger: each time of its grid runs once in the fleet,
// with both up, with one, and after both were down (then one catch-up, for the latest
// time missed).
func TestTimeTriggerRunsOncePerFleet(t *testing.T) {
	t.Parallel()
	db := newFleetDB(t)
	var s slots
	replica, started := timeFleet(t, db, &s, nil)
	a, b := replica("a"), replica("b")
	take := func(n int) {
		for range n {
			next(t, started)
		}
	}
	take(8)
	a.stop(t) // right after a run: the next time is a period away
	take(6)
	b.stop(t)
	before := s.times()
	time.Sleep(period * 5 / 2) // both down over two times of the grid: the test's input
	restart := time.Now()
	replica("a2")
	replica("b2")
	take(5)

	assert.Empty(t, s.twice(), "a time ran twice")
	times := s.times()
	last := before[len(before)-1]
	assert.Equal(t, consecutive(before[0], last), before, "a time did not run while the fleet was up")
	after := times[len(before):]
	require.NotEmpty(t, after)
	catchUp := after[0]
	assert.GreaterOrEqual(t, catchUp.Sub(last), 2*period, "the times missed while down")
	assert.False(t, catchUp.After(restart), "the first run after the restart is the catch-up of a time missed")
	assert.Equal(t, consecutive(catchUp, after[len(after)-1]), after, "one catch-up, then every time")
	t.Logf("ran %d times; down from after %s to %s; catch-up for %s", len(times), last.Format("15:04:05"), restart.Format("15:04:05.000"), catchUp.Format("15:04:05"))
}

// consecutive returns the times of the grid from first to last.
func consecutive(first, last time.Time) []time.Time {
	var ts []time.Time
	for at := first; !at.After(last); at = at.Add(period) {
		ts = append(ts, at)
	}
	return ts
}

// A time that comes while the last one's instance still runs, on any replica, is held,
// and the times held meanwhile coalesce into one catch-up, for the latest.
func TestTimeFiresHeldWhileRunningCoalesce(t *testing.T) {
	t.Parallel()
	db := newFleetDB(t)
	var s slots
	var once sync.Once
	replica, started := timeFleet(t, db, &s, func(ctx context.Context) error {
		long := false
		once.Do(func() { long = true })
		if long {
			select { // the first run outlasts two times of the grid
			case <-time.After(period * 5 / 2): // the task's own duration: the test's input
			case <-ctx.Done():
			}
		}
		return nil
	})
	replica("a")
	replica("b")
	first := next(t, started)
	second := next(t, started)
	third := next(t, started)
	assert.Empty(t, s.twice(), "a time ran twice")
	at := func(r ran) time.Time { return r.details.(*bgtask.TimeTriggerDetails).ScheduledAt }
	gap := at(second).Sub(at(first))
	assert.GreaterOrEqual(t, gap, 2*period, "the times held during the long run ran separately")
	assert.LessOrEqual(t, gap, 4*period)
	assert.Equal(t, period, at(third).Sub(at(second)), "then every time")
	t.Logf("first %s, catch-up %s (held on %s), then %s", at(first).Format("15:04:05"), at(second).Format("15:04:05"), second.replica, at(third).Format("15:04:05"))
}

// Three replicas Ensure the same 200 time triggers of one period, which come due together
// (the grid starts at the epoch): each replica's scheduler hands them over at once, and
// each time of each registration runs once in the fleet. None is coalesced into a later
// one: no instance lasts until the next time, and the replicas' duplicate inserts give
// way to River's completer (insert.go).
//
// Not parallel: it runs before this package's parallel tests, while none of them loads
// the machine, so that a time coalesced would be the fleet's doing.
func TestTimeBurstRunsOncePerFleet(t *testing.T) {
	const n, every = 200, time.Second
	db := newFleetDB(t)
	var mu sync.Mutex
	ran := make(map[string][]time.Time) // by registration, the times that ran
	task := bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
		mu.Lock()
		defer mu.Unlock()
		name := inst.Task().Name()
		ran[name] = append(ran[name], inst.TriggerDetails().(*bgtask.TimeTriggerDetails).ScheduledAt.UTC())
		return nil
	})
	for _, name := range []string{"a", "b", "c"} {
		r := db.replica(t, name, bgtaskriver.Config{}, bgtask.WithEntryPoint("job", task))
		for k := range n {
			r.ensure(t, bgtask.Builder{Name: fmt.Sprint("t", k), TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: every}})
		}
		r.start(t)
	}
	first := time.Now().UTC().Truncate(every).Add(2 * every) // every replica has every registration
	last := first.Add(4 * every)
	eventually(t, time.Until(last)+waitFor, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for k := range n {
			times := ran[fmt.Sprint("t", k)]
			if len(times) == 0 || times[len(times)-1].Before(last) {
				return false
			}
		}
		return true
	}, "every registration ran its time of "+last.Format("15:04:05"))
	mu.Lock()
	defer mu.Unlock()
	for name, times := range ran {
		for k := 1; k < len(times); k++ {
			assert.True(t, times[k].After(times[k-1]), "%s ran %v after %v: a time twice, or out of order", name, times[k], times[k-1])
		}
		window := slices.DeleteFunc(slices.Clone(times), func(at time.Time) bool { return at.Before(first) || at.After(last) })
		assert.Equal(t, consecutive(first, last), window, "%s: every time from %s", name, first.Format("15:04:05"))
	}
}

package bgtask_test

// Bursts: more time triggers due at one instant than the scheduler fires per batch, while
// everything else happens (limits, conditions, suspension, Unregister, Requests, cancels,
// Shutdown, panics, a dispatcher, Ensure). Instances that end during a burst are retired
// after it (see endingList): each test checks that every launched instance still gets
// exactly one Completed event, that none is left unretired, and that no slot runs twice.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

// ledger records every Launched and Completed event and every OnCompleted call.
type ledger struct {
	mu        sync.Mutex
	launched  map[uuid.UUID]*bgtask.Registration
	completed map[uuid.UUID]int
	dropped   int
	onComp    map[uuid.UUID]int
	compByReg map[*bgtask.Registration]int
	ocByReg   map[*bgtask.Registration]int
	sched     map[*bgtask.Registration]map[time.Time]int
	problems  []string
	missed    uint64
	zeroStart map[uuid.UUID]bool
}

func newLedger(h *bgtask.Host) *ledger {
	l := &ledger{launched: map[uuid.UUID]*bgtask.Registration{}, completed: map[uuid.UUID]int{},
		onComp: map[uuid.UUID]int{}, compByReg: map[*bgtask.Registration]int{}, ocByReg: map[*bgtask.Registration]int{},
		sched: map[*bgtask.Registration]map[time.Time]int{}, zeroStart: map[uuid.UUID]bool{}}
	h.Subscribe(func(e bgtask.Event) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.missed += e.Missed
		switch e.Kind {
		case bgtask.EventLaunched:
			if _, dup := l.launched[e.InstanceID]; dup {
				l.problems = append(l.problems, "duplicate launch id "+e.InstanceID.String())
			}
			l.launched[e.InstanceID] = e.Task
		case bgtask.EventCompleted:
			l.completed[e.InstanceID]++
			l.compByReg[e.Task]++
			if e.Result.Started.IsZero() {
				l.zeroStart[e.InstanceID] = true
			}
		}
	}, bgtask.EventLaunched, bgtask.EventCompleted)
	return l
}

func (l *ledger) watch(r *bgtask.Registration) {
	r.OnCompleted(func(e bgtask.CompletedEventArgs) {
		l.mu.Lock()
		l.onComp[e.InstanceID]++
		l.ocByReg[r]++
		l.mu.Unlock()
	})
}

func (l *ledger) ran(inst bgtask.BackgroundTaskInstance) {
	if d, ok := inst.TriggerDetails().(*bgtask.TimeTriggerDetails); ok {
		l.mu.Lock()
		m := l.sched[inst.Task()]
		if m == nil {
			m = map[time.Time]int{}
			l.sched[inst.Task()] = m
		}
		m[d.ScheduledAt]++
		l.mu.Unlock()
	}
}

// check checks that each launched instance has exactly one Completed event, that no other
// Completed event is for anything but a dropped fire, and that OnCompleted saw the same.
func (l *ledger) check(t *testing.T, watchedAll bool) (launched, completed int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Empty(t, l.problems)
	require.Zero(t, l.missed, "subscriber missed events")
	for id := range l.launched {
		require.Equalf(t, 1, l.completed[id], "instance %s launched, Completed %d times", id, l.completed[id])
	}
	for id := range l.zeroStart { // a dropped fire, or an instance terminated before Run
		if _, ok := l.launched[id]; !ok {
			l.dropped++
		}
	}
	total := 0
	for id, n := range l.completed {
		require.Equalf(t, 1, n, "instance %s Completed %d times", id, n)
		total += n
	}
	require.Equal(t, len(l.launched)+l.dropped, total, "completed = launched + dropped")
	for id, n := range l.onComp {
		require.Equalf(t, 1, n, "OnCompleted %d times for %s", n, id)
		require.Equalf(t, 1, l.completed[id], "OnCompleted for %s without EventCompleted", id)
	}
	if watchedAll {
		for r, n := range l.compByReg {
			require.Equalf(t, n, l.ocByReg[r], "reg %s: EventCompleted %d, OnCompleted %d", r.Name(), n, l.ocByReg[r])
		}
	}
	for r, m := range l.sched {
		for at, n := range m {
			require.Equalf(t, 1, n, "reg %s ran %d times for slot %v", r.Name(), n, at)
		}
	}
	return len(l.launched), total
}

// requireIdle checks that, once every goroutine is durably blocked, the host lists no
// instance: a retirement delayed beyond the burst would leave some listed.
func requireIdle(t *testing.T, h *bgtask.Host) {
	t.Helper()
	synctest.Wait()
	require.Empty(t, h.Instances(), "instances left unretired after the burst")
}

// requireRescheduled checks that every registration still registered fires next in the
// future.
func requireRescheduled(t *testing.T, regs []*bgtask.Registration) {
	t.Helper()
	now := time.Now()
	for _, r := range regs {
		if next, ok := r.NextFire(); ok {
			require.Truef(t, next.After(now), "reg %s next fire %v not after now %v", r.Name(), next, now)
		}
	}
}

func burstRegs(t *testing.T, h *bgtask.Host, l *ledger, n int, task bgtask.TaskFunc, conds ...bgtask.Condition) []*bgtask.Registration {
	regs := make([]*bgtask.Registration, n)
	for k := range n {
		regs[k] = mustRegister(t, h, bgtask.Builder{Name: fmt.Sprint("burst", k), Task: task,
			Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}, Conditions: conds})
		l.watch(regs[k])
	}
	return regs
}

// Plain bursts, several minutes.
func TestBurstPlain(t *testing.T) {
	for _, n := range []int{65, 129, 1000, 3000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHost(t, bgtask.WithLogger(nil))
				l := newLedger(h)
				var runs atomic.Int64
				regs := burstRegs(t, h, l, n, func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
					l.ran(inst)
					runs.Add(1)
					return nil
				})
				for m := 1; m <= 3; m++ {
					time.Sleep(time.Minute + time.Millisecond)
					requireIdle(t, h)
					requireRescheduled(t, regs)
					require.Equal(t, int64(m*n), runs.Load())
				}
				require.NoError(t, h.Shutdown(context.Background()))
				la, co := l.check(t, true)
				require.Equal(t, 3*n, la)
				require.Equal(t, 3*n, co)
			})
		})
	}
}

// MaxConcurrent during a burst.
func TestBurstMaxConcurrent(t *testing.T) {
	for _, mc := range []int{1, 5, 63, 64, 65, 200} {
		t.Run(fmt.Sprint(mc), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHost(t, bgtask.WithLogger(nil), bgtask.WithPolicy(bgtask.Policy{MaxConcurrent: mc}))
				l := newLedger(h)
				var running, maxRunning, runs atomic.Int64
				n := 500
				regs := burstRegs(t, h, l, n, func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
					l.ran(inst)
					c := running.Add(1)
					for {
						m := maxRunning.Load()
						if c <= m || maxRunning.CompareAndSwap(m, c) {
							break
						}
					}
					runs.Add(1)
					running.Add(-1)
					return nil
				})
				for m := 1; m <= 2; m++ {
					time.Sleep(time.Minute + time.Millisecond)
					requireIdle(t, h)
					requireRescheduled(t, regs)
					require.Equal(t, int64(m*n), runs.Load())
				}
				require.LessOrEqual(t, maxRunning.Load(), int64(mc))
				require.NoError(t, h.Shutdown(context.Background()))
				l.check(t, true)
			})
		})
	}
}

// A condition flips during the burst (from inside the first tasks), and back later.
func TestBurstConditionFlips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil))
		l := newLedger(h)
		sw := bgtask.NewCondition(true)
		var runs, flips atomic.Int64
		var flipping atomic.Bool
		flipping.Store(true)
		n := 1000
		regs := burstRegs(t, h, l, n, func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			l.ran(inst)
			k := runs.Add(1)
			if k%100 == 0 && flipping.Load() {
				flips.Add(1)
				sw.Set(k%200 != 0)
			}
			return nil
		}, sw)
		time.Sleep(time.Minute + time.Millisecond)
		synctest.Wait()
		flipping.Store(false)
		sw.Set(true)
		requireIdle(t, h)
		requireRescheduled(t, regs)
		flipping.Store(true)
		time.Sleep(time.Minute)
		flipping.Store(false)
		sw.Set(false)
		sw.Set(true)
		requireIdle(t, h)
		requireRescheduled(t, regs)
		require.NoError(t, h.Shutdown(context.Background()))
		l.check(t, true)
		// every registration ran at least once per minute (held fires coalesce)
		require.GreaterOrEqual(t, runs.Load(), int64(2*n))
	})
}

// Suspend and Resume during the burst.
func TestBurstSuspendResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var noSuspend atomic.Bool
		h := newHost(t, bgtask.WithLogger(nil))
		l := newLedger(h)
		var runs atomic.Int64
		n := 1000
		regs := burstRegs(t, h, l, n, func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			l.ran(inst)
			k := runs.Add(1)
			switch k % 150 {
			case 10:
				if !noSuspend.Load() {
					h.Suspend()
				}
			case 20:
				go h.Resume()
			}
			return inst.Checkpoint()
		})
		time.Sleep(time.Minute + time.Millisecond)
		synctest.Wait()
		noSuspend.Store(true)
		h.Resume()
		requireIdle(t, h)
		requireRescheduled(t, regs)
		require.Equal(t, int64(n), runs.Load())
		require.NoError(t, h.Shutdown(context.Background()))
		l.check(t, true)
	})
}

// Unregister during the burst.
func TestBurstUnregister(t *testing.T) {
	for _, cancel := range []bool{false, true} {
		t.Run(fmt.Sprint(cancel), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHost(t, bgtask.WithLogger(nil), bgtask.WithPolicy(bgtask.Policy{MaxConcurrent: 100}))
				l := newLedger(h)
				var runs atomic.Int64
				n := 1000
				var regs []*bgtask.Registration
				ready := make(chan struct{})
				var once sync.Once
				regs = burstRegs(t, h, l, n, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
					<-ready
					l.ran(inst)
					runs.Add(1)
					once.Do(func() {
						go func() {
							for k := 0; k < n; k += 3 {
								regs[k].Unregister(cancel)
							}
						}()
					})
					if runs.Load()%2 == 0 {
						<-ctx.Done()
					}
					return nil
				})
				close(ready)
				time.Sleep(time.Minute + time.Millisecond)
				synctest.Wait()
				// the ones still blocked on ctx: unregister the rest with cancel
				for _, r := range regs {
					r.Unregister(true)
				}
				h.Cancel(bgtask.Abort)
				requireIdle(t, h)
				require.NoError(t, h.Shutdown(context.Background()))
				l.check(t, true)
			})
		})
	}
}

// ApplicationTrigger Requests and RequestAndWait during the burst.
func TestBurstRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil), bgtask.WithPolicy(bgtask.Policy{MaxConcurrent: 32}))
		l := newLedger(h)
		const na = 50
		trigs := make([]*bgtask.ApplicationTrigger, na)
		var appRuns atomic.Int64
		for k := range na {
			trigs[k] = bgtask.NewApplicationTrigger()
			r := mustRegister(t, h, bgtask.Builder{Name: fmt.Sprint("app", k), Trigger: trigs[k],
				Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { appRuns.Add(1); return nil })})
			l.watch(r)
		}
		var runs atomic.Int64
		var wg sync.WaitGroup
		var waitErrs atomic.Int64
		n := 1000
		regs := burstRegs(t, h, l, n, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			l.ran(inst)
			k := runs.Add(1)
			tr := trigs[k%na]
			if k%7 == 0 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, res, err := tr.RequestAndWait(context.Background(), nil)
					if err != nil || res == bgtask.UnknownError {
						waitErrs.Add(1)
					}
				}()
			} else {
				_, _ = tr.Request(context.Background(), nil)
			}
			return nil
		})
		time.Sleep(time.Minute + time.Millisecond)
		wg.Wait()
		requireIdle(t, h)
		requireRescheduled(t, regs)
		require.Equal(t, int64(n), runs.Load())
		require.Zero(t, waitErrs.Load())
		require.NoError(t, h.Shutdown(context.Background()))
		l.check(t, true)
	})
}

// RequestAndWait from inside a burst task on a fire held by MaxConcurrent.
func TestBurstRequestAndWaitInsideTask(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil), bgtask.WithPolicy(bgtask.Policy{MaxConcurrent: 3}))
		l := newLedger(h)
		tr := bgtask.NewApplicationTrigger()
		l.watch(mustRegister(t, h, bgtask.Builder{Name: "app", Trigger: tr,
			Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })}))
		var runs atomic.Int64
		n := 300
		regs := burstRegs(t, h, l, n, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			l.ran(inst)
			// Two tasks wait at most, taking two of the three slots: three would leave none
			// for the fire they wait for, a deadlock of the program's making.
			if k := runs.Add(1); k == 1 || k == 250 {
				_, _, err := tr.RequestAndWait(ctx, nil)
				return err
			}
			return nil
		})
		time.Sleep(time.Minute + time.Millisecond)
		requireIdle(t, h)
		requireRescheduled(t, regs)
		require.Equal(t, int64(n), runs.Load())
		require.NoError(t, h.Shutdown(context.Background()))
		l.check(t, true)
	})
}

// Host.Cancel and CancelInstance during the burst.
func TestBurstCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil), bgtask.WithPolicy(bgtask.Policy{GracePeriod: time.Second}))
		l := newLedger(h)
		var runs atomic.Int64
		n := 1000
		regs := burstRegs(t, h, l, n, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			l.ran(inst)
			k := runs.Add(1)
			switch {
			case k%97 == 0:
				go h.Cancel(bgtask.Abort)
			case k%13 == 0:
				go func() {
					for _, in := range h.Instances() {
						h.CancelInstance(in.InstanceID, bgtask.Abort)
					}
				}()
			}
			if k%3 == 0 {
				<-ctx.Done()
				return context.Cause(ctx)
			}
			if k%5 == 0 { // ignore cancel: terminated after grace
				d := inst.GetDeferral()
				go func() { time.Sleep(2 * time.Second); d.Complete() }()
			}
			return nil
		})
		time.Sleep(time.Minute + time.Millisecond)
		synctest.Wait()
		h.Cancel(bgtask.Abort)
		time.Sleep(3 * time.Second)
		requireIdle(t, h)
		requireRescheduled(t, regs)
		require.NoError(t, h.Shutdown(context.Background()))
		l.check(t, true)
	})
}

// Shutdown with a short deadline during the burst; tasks that ignore cancellation.
func TestBurstShutdownDeadline(t *testing.T) {
	for _, at := range []int64{1, 64, 65, 300, 999} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHost(t, bgtask.WithLogger(nil), bgtask.WithPolicy(bgtask.Policy{GracePeriod: 2 * time.Second}))
				l := newLedger(h)
				var runs atomic.Int64
				done := make(chan error, 1)
				release := make(chan struct{})
				n := 1000
				burstRegs(t, h, l, n, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
					l.ran(inst)
					k := runs.Add(1)
					if k == at {
						go func() {
							ctx, cancel := context.WithTimeout(context.Background(), time.Second)
							defer cancel()
							done <- h.Shutdown(ctx)
						}()
					}
					switch k % 4 {
					case 0:
						<-release // ignores cancellation
					case 1:
						<-ctx.Done()
					case 2:
						d := inst.GetDeferral()
						go func() { <-release; d.Complete() }()
					}
					return nil
				})
				time.Sleep(time.Minute + time.Millisecond)
				err := <-done
				var se *bgtask.ShutdownError
				if err != nil {
					require.ErrorAs(t, err, &se)
				}
				// after grace all are terminated; Shutdown again returns, instances with goroutines listed
				err2 := h.Shutdown(context.Background())
				var se2 *bgtask.ShutdownError
				if err2 != nil {
					require.ErrorAs(t, err2, &se2)
				}
				close(release)
				synctest.Wait()
				require.Empty(t, h.Instances())
				l.check(t, true)
			})
		})
	}
}

// Deferrals, panics, Goexit, OnCompleted handlers that fire again.
func TestBurstDeferralsPanicsRefire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil))
		l := newLedger(h)
		tr := bgtask.NewApplicationTrigger()
		var appRuns atomic.Int64
		app := mustRegister(t, h, bgtask.Builder{Name: "app", Trigger: tr,
			Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { appRuns.Add(1); return nil })})
		l.watch(app)
		var runs atomic.Int64
		n := 1000
		regs := burstRegs(t, h, l, n, func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			l.ran(inst)
			k := runs.Add(1)
			switch k % 6 {
			case 0:
				panic("boom")
			case 1:
				d := inst.GetDeferral()
				go d.Complete()
			case 2:
				inst.Go(func(context.Context) error { return errors.New("go err") })
			case 3:
				d := inst.GetDeferral()
				time.AfterFunc(time.Millisecond, d.Complete)
			case 4:
				inst.Go(func(context.Context) error { panic("go boom") })
			}
			return nil
		})
		for k, r := range regs {
			if k%2 == 0 {
				r.OnCompleted(func(bgtask.CompletedEventArgs) { _, _ = tr.Request(context.Background(), nil) })
			}
		}
		time.Sleep(time.Minute + time.Millisecond)
		requireIdle(t, h)
		requireRescheduled(t, regs)
		time.Sleep(time.Minute)
		requireIdle(t, h)
		requireRescheduled(t, regs)
		require.Equal(t, int64(2*n), runs.Load())
		require.NoError(t, h.Shutdown(context.Background()))
		l.check(t, true)
	})
}

// A Dispatcher with bursts: dispatched persistent registrations mixed with local ones,
// a Dispatch that calls runtime.Goexit once.
type burstQueue struct {
	queue
	goexit atomic.Int64
	n      atomic.Int64
}

func (q *burstQueue) Dispatch(ctx context.Context, r *bgtask.Registration, details any, wait bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
	if q.n.Add(1) == q.goexit.Load() {
		runtime.Goexit()
	}
	return q.queue.Dispatch(ctx, r, details, wait)
}

func TestBurstDispatcher(t *testing.T) {
	for _, ge := range []int64{0, 1, 30, 100} {
		t.Run(fmt.Sprint(ge), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				q := &burstQueue{}
				q.goexit.Store(ge)
				var dRuns atomic.Int64
				h := dispatchingHost(t, newMemStore(), q, func(context.Context, bgtask.BackgroundTaskInstance) error { dRuns.Add(1); return nil })
				l := newLedger(h)
				var runs atomic.Int64
				var regs []*bgtask.Registration
				// interleave registration: local ones and dispatched ones
				for k := range 600 {
					if k%5 == 0 {
						r, err := h.Register(bgtask.Builder{Name: fmt.Sprint("d", k), TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
						require.NoError(t, err)
						regs = append(regs, r)
					} else {
						r := mustRegister(t, h, bgtask.Builder{Name: fmt.Sprint("l", k), Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute},
							Task: bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
								l.ran(inst)
								runs.Add(1)
								return nil
							})})
						l.watch(r)
						regs = append(regs, r)
					}
				}
				time.Sleep(time.Minute + time.Millisecond) // dispatched ones are on the Unix-epoch grid: may fire at a different instant
				requireIdle(t, h)
				time.Sleep(time.Minute)
				requireIdle(t, h)
				requireRescheduled(t, regs)
				require.Equal(t, int64(2*480), runs.Load())
				require.NoError(t, h.Shutdown(context.Background()))
				l.check(t, true)
			})
		})
	}
}

// Ensure during a burst, changing a setting or only the task: no slot runs twice, and the
// new task runs from the next fire on.
func TestBurstEnsure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit func() time.Duration
	}{
		{"changed", func() time.Duration { return time.Duration(1+rand.IntN(5)) * time.Hour }},
		{"same", func() time.Duration { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) { synctest.Test(t, func(t *testing.T) { ensureDuringABurst(t, tc.limit) }) })
	}
}

func ensureDuringABurst(t *testing.T, limit func() time.Duration) {
	h := newHost(t, bgtask.WithLogger(nil))
	l := newLedger(h)
	var runs, runs2 atomic.Int64
	const n = 1000
	counting := func(c *atomic.Int64) bgtask.TaskFunc {
		return func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			l.ran(inst)
			c.Add(1)
			return nil
		}
	}
	regs := burstRegs(t, h, l, n, counting(&runs))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			time.Sleep(time.Minute)
			for k := g; k < n; k += 4 {
				_, err := h.Ensure(bgtask.Builder{Name: fmt.Sprint("burst", k), Task: counting(&runs2),
					Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}, MaxExecutionTime: limit()})
				assert.NoError(t, err)
			}
		})
	}
	time.Sleep(time.Minute + time.Millisecond)
	wg.Wait()
	requireIdle(t, h)
	requireRescheduled(t, regs)
	require.Equal(t, int64(n), runs.Load()+runs2.Load())
	time.Sleep(time.Minute)
	requireIdle(t, h)
	require.Equal(t, int64(2*n), runs.Load()+runs2.Load())
	require.GreaterOrEqual(t, runs2.Load(), int64(n), "the new task from the next fire on")
	require.NoError(t, h.Shutdown(context.Background()))
	l.check(t, true)
}

// MaxExecutionTime and IdleTimeout expiring during a burst; tasks that run past the
// period (catch-up fires); OneShot time triggers; registrations added during the burst.
func TestBurstTimersCatchUpOneShot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t, bgtask.WithLogger(nil), bgtask.WithPolicy(bgtask.Policy{
			MaxExecutionTime: 1500 * time.Millisecond, IdleTimeout: 700 * time.Millisecond, GracePeriod: 300 * time.Millisecond,
			MaxConcurrent: 400}))
		l := newLedger(h)
		var runs atomic.Int64
		var mu sync.Mutex
		var regs []*bgtask.Registration
		var task bgtask.TaskFunc
		task = func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			l.ran(inst)
			k := runs.Add(1)
			switch k % 5 {
			case 0:
				<-ctx.Done() // idle or time limit
			case 1:
				for range 5 {
					inst.SetProgress(uint32(k))
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(300 * time.Millisecond):
					}
				}
			case 2:
				inst.SetProgress(1)
				select { // longer than the period: catch-up
				case <-ctx.Done():
				case <-time.After(650 * time.Millisecond):
				}
				inst.SetProgress(2)
				select {
				case <-ctx.Done():
				case <-time.After(600 * time.Millisecond):
				}
			case 3:
				if k < 3000 {
					r, err := h.Register(bgtask.Builder{Name: fmt.Sprint("late", k), Task: task,
						Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Second, OneShot: k%2 == 0}})
					if err == nil {
						l.watch(r)
						mu.Lock()
						regs = append(regs, r)
						mu.Unlock()
					}
				}
			}
			return nil
		}
		for k := range 800 {
			r := mustRegister(t, h, bgtask.Builder{Name: fmt.Sprint("b", k), Task: task,
				Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Second, OneShot: k%7 == 0}})
			l.watch(r)
			mu.Lock()
			regs = append(regs, r)
			mu.Unlock()
		}
		time.Sleep(10*time.Second + time.Millisecond)
		mu.Lock()
		first := regs[:100]
		mu.Unlock()
		for _, r := range first {
			r.Unregister(rand.IntN(2) == 0)
		}
		time.Sleep(5 * time.Second)
		require.NoError(t, h.Shutdown(context.Background()))
		synctest.Wait()
		require.Empty(t, h.Instances())
		l.check(t, true)
		require.Greater(t, runs.Load(), int64(5000))
	})
}

// Shutdown called from a Subscribe handler and from an OnCompleted handler mid-burst.
func TestBurstShutdownFromHandler(t *testing.T) {
	for _, where := range []string{"subscribe", "oncompleted"} {
		t.Run(where, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHost(t, bgtask.WithLogger(nil))
				l := newLedger(h)
				var runs atomic.Int64
				var once sync.Once
				done := make(chan error, 1)
				stop := func() { once.Do(func() { go func() { done <- h.Shutdown(context.Background()) }() }) }
				var completed atomic.Int64
				if where == "subscribe" {
					h.Subscribe(func(bgtask.Event) {
						if completed.Add(1) == 100 {
							_ = h.Shutdown(context.Background()) // from a callback: returns with Stuck
							stop()
						}
					}, bgtask.EventCompleted)
				}
				regs := burstRegs(t, h, l, 1000, func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
					l.ran(inst)
					runs.Add(1)
					return nil
				})
				if where == "oncompleted" {
					for _, r := range regs {
						r.OnCompleted(func(bgtask.CompletedEventArgs) {
							if completed.Add(1) == 100 {
								_ = h.Shutdown(context.Background())
								stop()
							}
						})
					}
				}
				time.Sleep(time.Minute + time.Millisecond)
				require.NoError(t, <-done)
				synctest.Wait()
				require.Empty(t, h.Instances())
				l.check(t, true)
			})
		})
	}
}

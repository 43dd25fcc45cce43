package bgtaskhttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskhttp"
)

// soakDuration is how long TestSoak runs; BGTASK_SOAK (such as "5s") overrides it. Run
// again in the same process (go test -count), it runs repeatSoak: twenty soaks of 30 s
// would outlast go test's default timeout and find nothing the first did not.
const (
	soakDuration = 30 * time.Second
	repeatSoak   = 3 * time.Second
)

// soaked is set once a TestSoak of this process ran.
var soaked atomic.Bool

// TestSoak runs a host for soakDuration under many goroutines that register and
// unregister, request, cancel with random reasons, suspend and resume, and read the
// state, while the tasks take and complete deferrals and start Go funcs. At the end, after
// Shutdown: every fire that Request accepted ended in exactly one Completed event, no
// instance is left, no goroutine leaked, and the heap is back within 10% of where it was
// before the host was made.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak runs without -short")
	}
	d := soakDuration
	if soaked.Swap(true) {
		d = repeatSoak
	}
	if s := os.Getenv("BGTASK_SOAK"); s != "" {
		var err error
		d, err = time.ParseDuration(s)
		require.NoError(t, err, "BGTASK_SOAK")
	}
	soak(t, 2*time.Second) // warm-up: what is made once per process is made now
	before := heapAlloc()
	res := soak(t, d)
	goleak.VerifyNone(t)
	after := heapAlloc()
	t.Logf("%s: %d fires accepted, %d completed; %d instances canceled; %d states read; heap %d B before, %d B after",
		d, res.accepted, res.completed, res.canceled, res.reads, before, after)
	assert.Positive(t, res.accepted)
	assert.LessOrEqual(t, float64(after), 1.1*float64(before), "the heap grew by more than 10%")
}

// heapAlloc returns the heap in use once the garbage is collected: twice, as sync.Pool
// keeps its objects for one collection more.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

type soakResult struct {
	accepted, completed, canceled, reads int64
}

// soaker is one soak: its host, its handler and the registrations the goroutines share.
type soaker struct {
	t    *testing.T
	host *bgtask.Host
	hd   http.Handler

	held  *bgtask.Switch // the condition of the registrations that are not counted
	acc   atomic.Int64   // fires accepted by Request on counted registrations
	canc  atomic.Int64   // instances canceled
	reads atomic.Int64   // states read

	mu    sync.Mutex
	live  []soakReg        // the registrations the requesters pick from
	ended map[[16]byte]int // Completed events per instance id, of counted registrations
}

// soakReg is a registration with the trigger that fires it. counted registrations have
// neither condition nor concurrency limit, so that each fire Request accepts is one
// fire; the others have a condition that flips, so that their fires are held, coalesced
// and dropped, which Request's answers cannot count.
type soakReg struct {
	reg     *bgtask.Registration
	trig    *bgtask.ApplicationTrigger
	counted bool
}

// soak runs one soak for d and checks its end.
func soak(t *testing.T, d time.Duration) soakResult {
	h, err := bgtask.NewHost(bgtask.WithLogger(nil), bgtask.WithDeferralSites(true),
		bgtask.WithPolicy(bgtask.Policy{GracePeriod: time.Second, MinFreshness: 10 * time.Millisecond}))
	require.NoError(t, err)
	s := &soaker{t: t, host: h, hd: bgtaskhttp.New(h, bgtaskhttp.AllowCancel()), ended: map[[16]byte]int{},
		held: bgtask.NewCondition(true)}
	s.registerTimed()

	ctx, stop := context.WithTimeout(context.Background(), d)
	defer stop()
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){s.registrar, s.registrar, s.requester, s.requester, s.requester,
		s.requester, s.requester, s.requester, s.canceler, s.canceler, s.suspender, s.flipper, s.reader, s.reader,
		s.stream} {
		wg.Go(func() { f(ctx) })
	}
	wg.Wait()

	shutdown, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, h.Shutdown(shutdown))
	assert.Empty(t, h.Instances(), "no instance is left")
	return s.check()
}

// check checks that every accepted fire ended in exactly one Completed event.
func (s *soaker) check() soakResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := soakResult{accepted: s.acc.Load(), canceled: s.canc.Load(), reads: s.reads.Load()}
	for id, n := range s.ended {
		res.completed += int64(n)
		if n != 1 {
			s.t.Errorf("instance %x: %d Completed events", id, n)
		}
	}
	assert.Equal(s.t, res.accepted, res.completed, "fires accepted and Completed events")
	return res
}

// registerTimed registers a few time triggers, whose fires are held while the host is
// suspended; they are not counted.
func (s *soaker) registerTimed() {
	for range 4 {
		_, err := s.host.Register(bgtask.Builder{Name: "timed", Task: bgtask.TaskFunc(soakTask),
			Trigger: &bgtask.TimeTrigger{FreshnessTime: 20 * time.Millisecond}})
		require.NoError(s.t, err)
	}
}

// registrar keeps about 64 registrations: it registers one, and unregisters one at random
// (canceling its instance or not) once there are more.
func (s *soaker) registrar(ctx context.Context) {
	for ctx.Err() == nil {
		s.register(rand.N(4) > 0)
		s.mu.Lock()
		var gone soakReg
		if n := len(s.live); n > 64 {
			k := rand.N(n)
			gone = s.live[k]
			s.live[k] = s.live[n-1]
			s.live = s.live[:n-1]
		}
		s.mu.Unlock()
		if gone.reg != nil {
			gone.reg.Unregister(rand.N(2) == 0)
		}
		time.Sleep(time.Duration(rand.N(2000)) * time.Microsecond)
	}
}

// register registers a counted registration, or one held by s.held.
func (s *soaker) register(counted bool) {
	trig := bgtask.NewApplicationTrigger()
	b := bgtask.Builder{Name: "soak <&>", Task: bgtask.TaskFunc(soakTask), Trigger: trig}
	if !counted {
		b.Name, b.Conditions = "held", []bgtask.Condition{s.held}
	}
	reg, err := s.host.Register(b)
	require.NoError(s.t, err)
	if counted {
		reg.OnCompleted(func(e bgtask.CompletedEventArgs) {
			s.mu.Lock()
			s.ended[e.InstanceID]++
			s.mu.Unlock()
		})
	}
	s.mu.Lock()
	s.live = append(s.live, soakReg{reg: reg, trig: trig, counted: counted})
	s.mu.Unlock()
}

// requester requests registrations at random, with arguments, and counts the fires
// accepted.
func (s *soaker) requester(ctx context.Context) {
	for ctx.Err() == nil {
		s.mu.Lock()
		var r soakReg
		if len(s.live) > 0 {
			r = s.live[rand.N(len(s.live))]
		}
		s.mu.Unlock()
		if r.reg == nil {
			time.Sleep(time.Millisecond)
			continue
		}
		res, err := r.trig.Request(context.Background(), map[string]any{"n": rand.N(1000)})
		require.NoError(s.t, err)
		if res == bgtask.Allowed && r.counted {
			s.acc.Add(1)
		}
		time.Sleep(time.Duration(rand.N(200)) * time.Microsecond)
	}
}

// canceler cancels running instances with random reasons, directly or through the
// handler.
func (s *soaker) canceler(ctx context.Context) {
	for ctx.Err() == nil {
		if infos := s.host.Instances(); len(infos) > 0 {
			in := infos[rand.N(len(infos))]
			if rand.N(4) == 0 {
				w := serve(s.hd, http.MethodPost, "/api/instances/"+in.InstanceID.String()+"/cancel")
				if w.Code == http.StatusNoContent {
					s.canc.Add(1)
				}
			} else if s.host.CancelInstance(in.InstanceID, bgtask.CancellationReason(rand.N(12))) {
				s.canc.Add(1)
			}
		}
		time.Sleep(time.Duration(rand.N(3000)) * time.Microsecond)
	}
}

// suspender suspends the host for a few milliseconds now and then.
func (s *soaker) suspender(ctx context.Context) {
	for ctx.Err() == nil {
		time.Sleep(time.Duration(20+rand.N(50)) * time.Millisecond)
		s.host.Suspend()
		time.Sleep(time.Duration(1+rand.N(10)) * time.Millisecond)
		s.host.Resume()
	}
}

// flipper flips the condition of the registrations that are not counted.
func (s *soaker) flipper(ctx context.Context) {
	for ctx.Err() == nil {
		time.Sleep(time.Duration(1+rand.N(10)) * time.Millisecond)
		s.held.Set(rand.N(2) == 0)
	}
	s.held.Set(true)
}

// reader reads the state, and now and then the page.
func (s *soaker) reader(ctx context.Context) {
	for ctx.Err() == nil {
		if rand.N(10) == 0 {
			require.Equal(s.t, http.StatusOK, serve(s.hd, http.MethodGet, "/").Code)
		}
		w := serve(s.hd, http.MethodGet, "/api/state")
		require.Equal(s.t, http.StatusOK, w.Code)
		var st stateJSON
		require.NoError(s.t, json.Unmarshal(w.Body.Bytes(), &st))
		s.reads.Add(1)
		time.Sleep(time.Duration(rand.N(5)) * time.Millisecond)
	}
}

// stream keeps a stream of /api/events open for the whole soak.
func (s *soaker) stream(ctx context.Context) {
	w := newStreamWriter()
	s.hd.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/events", nil))
	assert.NotEmpty(s.t, w.messages())
}

// soakTask reports progress, passes checkpoints, takes a deferral that a goroutine
// completes or starts a Go func, and now and then fails or panics; it honors its
// cancellation.
func soakTask(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
	for step := range rand.N(5) {
		inst.SetProgress(uint32(20 * step))
		if err := inst.Checkpoint(); err != nil {
			return err
		}
		if !pause(ctx, rand.N(2000)) {
			return context.Cause(ctx)
		}
	}
	switch rand.N(4) {
	case 0:
		d := inst.GetDeferral()
		go func() {
			defer d.Complete()
			pause(ctx, rand.N(3000))
		}()
	case 1:
		inst.Go(func(ctx context.Context) error {
			if !pause(ctx, rand.N(3000)) {
				return context.Cause(ctx)
			}
			return nil
		})
	}
	switch rand.N(50) {
	case 0:
		return errors.New("soak failure <b>")
	case 1:
		panic("soak panic")
	}
	return nil
}

// pause waits us microseconds, and reports false if ctx ended first.
func pause(ctx context.Context, us int) bool {
	t := time.NewTimer(time.Duration(us) * time.Microsecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

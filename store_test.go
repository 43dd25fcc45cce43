package bgtask_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgtask-go/bgtask"
)

// memStore is an in-memory bgtask.Store for tests: a map guarded by a mutex, which copies
// the bytes it is given and those it returns. It counts the calls to Apply, and Load and
// Apply fail with the errors set by failLoad and failApply. It is safe for concurrent use.
type memStore struct {
	mu       sync.Mutex
	recs     map[uuid.UUID][]byte
	applies  int
	loadErr  error
	applyErr error
	// gate, when not nil, makes Apply wait until it is closed; entered, when not nil,
	// receives a value (if it has room) each time Apply is called, before it waits.
	gate    chan struct{}
	entered chan struct{}
}

func newMemStore() *memStore { return &memStore{recs: make(map[uuid.UUID][]byte)} }

func (s *memStore) Load(context.Context) (map[uuid.UUID][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loadErr != nil {
		return nil, s.loadErr
	}
	out := make(map[uuid.UUID][]byte, len(s.recs))
	for id, b := range s.recs {
		out[id] = bytes.Clone(b)
	}
	return out, nil
}

func (s *memStore) Apply(ctx context.Context, put map[uuid.UUID][]byte, del []uuid.UUID) error {
	s.mu.Lock()
	s.applies++
	gate, entered := s.gate, s.entered
	s.mu.Unlock()
	if entered != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applyErr != nil {
		return s.applyErr
	}
	for id, b := range put {
		s.recs[id] = bytes.Clone(b)
	}
	for _, id := range del {
		delete(s.recs, id)
	}
	return nil
}

// record returns a copy of the record of id, if the store has one.
func (s *memStore) record(id uuid.UUID) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.recs[id]
	return bytes.Clone(b), ok
}

// set stores b as the record of id, as if a host had written it.
func (s *memStore) set(id uuid.UUID, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs[id] = bytes.Clone(b)
}

// clone returns a store holding a copy of s's records: what a program that crashed now
// would find.
func (s *memStore) clone() *memStore {
	c := newMemStore()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, b := range s.recs {
		c.recs[id] = bytes.Clone(b)
	}
	return c
}

// size returns the number of records.
func (s *memStore) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs)
}

// applyCount returns the number of calls to Apply so far, failed ones included.
func (s *memStore) applyCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applies
}

// failApply makes every Apply from now on fail with err, and change nothing; nil heals it.
func (s *memStore) failApply(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyErr = err
}

// failLoad makes Load fail with err.
func (s *memStore) failLoad(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadErr = err
}

// completions returns a channel that receives r's Completed events.
func completions(r *bgtask.Registration) chan bgtask.CompletedEventArgs {
	ch := make(chan bgtask.CompletedEventArgs, 16)
	r.OnCompleted(func(e bgtask.CompletedEventArgs) { ch <- e })
	return ch
}

// returnsCause is a task that waits until it is canceled and returns the cause: its
// result then matches ErrCanceled.
var returnsCause = bgtask.TaskFunc(func(ctx context.Context, _ bgtask.BackgroundTaskInstance) error {
	<-ctx.Done()
	return context.Cause(ctx)
})

// shutDown shuts h down and requires a clean end.
func shutDown(t *testing.T, h *bgtask.Host) {
	t.Helper()
	require.NoError(t, h.Shutdown(context.Background()))
}

// lookup returns h's registration id, which must be registered.
func lookup(t *testing.T, h *bgtask.Host, id uuid.UUID) *bgtask.Registration {
	t.Helper()
	r, ok := h.Lookup(id)
	require.True(t, ok, "%s not registered", id)
	return r
}

// taskIDs returns the TaskIDs of regs, in order.
func taskIDs(regs []*bgtask.Registration) []uuid.UUID {
	ids := make([]uuid.UUID, len(regs))
	for k, r := range regs {
		ids[k] = r.TaskID()
	}
	return ids
}

// runTimes returns when rec's runs started, since rec was made.
func runTimes(rec *recorder) []time.Duration {
	var at []time.Duration
	for _, x := range rec.drain() {
		at = append(at, x.at)
	}
	return at
}

// sameResult checks that got is the restored form of want: the same InstanceID, Err text,
// cancellation, progress and times.
func sameResult(t *testing.T, want, got bgtask.CompletedEventArgs) {
	t.Helper()
	assert.Equal(t, want.InstanceID, got.InstanceID)
	if assert.Error(t, got.Err) && assert.Error(t, want.Err) {
		assert.Equal(t, want.Err.Error(), got.Err.Error())
	}
	assert.Equal(t, want.Canceled, got.Canceled)
	assert.Equal(t, want.Reason, got.Reason)
	assert.Equal(t, want.Progress, got.Progress)
	assert.True(t, want.Started.Equal(got.Started), "Started %v, want %v", got.Started, want.Started)
	assert.True(t, want.Finished.Equal(got.Finished), "Finished %v, want %v", got.Finished, want.Finished)
}

func TestStoreKeepsRegistrationsWithAnEntryPoint(t *testing.T) {
	s := newMemStore()
	ran := make(chan string, 4)
	task := bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
		ran <- inst.Task().Name()
		return nil
	})
	h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("sync", task))
	stored := mustRegister(t, h, bgtask.Builder{Name: "sync", TaskEntryPoint: "sync", Trigger: bgtask.NewApplicationTrigger()})
	_, ok := s.record(stored.TaskID())
	assert.True(t, ok, "a registration with a TaskEntryPoint is stored before Register returns")
	assert.Equal(t, 1, s.applyCount())

	trig := bgtask.NewApplicationTrigger()
	inMemory := mustRegister(t, h, bgtask.Builder{Name: "in-memory", Task: task, Trigger: trig})
	_, ok = s.record(inMemory.TaskID())
	assert.False(t, ok, "a registration with only a Task stays in memory")
	assert.Equal(t, 1, s.applyCount())
	e, res, err := trig.RequestAndWait(context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, bgtask.Allowed, res)
	assert.NoError(t, e.Err)
	assert.Equal(t, "in-memory", <-ran, "it runs as without a store")
	last, ok := inMemory.LastResult()
	assert.True(t, ok)
	assert.Equal(t, e.InstanceID, last.InstanceID)
	shutDown(t, h)
	assert.Equal(t, 1, s.applyCount(), "nothing of it is written, its result neither")

	h2 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("sync", task))
	assert.Equal(t, []uuid.UUID{stored.TaskID()}, taskIDs(h2.AllTasks()))
	shutDown(t, h2)
}

func TestStoreFailureRefusesTheRegistration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		injected := errors.New("disk full")
		s := newMemStore()
		s.failApply(injected)
		rec := newRecorder(nil)
		h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", rec))
		app := bgtask.NewApplicationTrigger()
		builders := []bgtask.Builder{
			{Name: "tick", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}},
			{Name: "app", TaskEntryPoint: "job", Trigger: app},
			{Name: "signal", TaskEntryPoint: "job", Trigger: &bgtask.SystemTrigger{Type: bgtask.SystemTriggerUserPresent}},
		}
		for _, b := range builders {
			r, err := h.Register(b)
			require.ErrorIs(t, err, injected, b.Name)
			assert.Nil(t, r)
			r, err = h.Ensure(b)
			require.ErrorIs(t, err, injected, b.Name)
			assert.Nil(t, r)
		}
		assert.Empty(t, h.AllTasks(), "nothing is registered")
		_, err := app.Request(context.Background(), nil)
		assert.ErrorIs(t, err, bgtask.ErrNotRegistered, "its trigger was never bound")
		h.Signal(bgtask.SystemTriggerUserPresent)
		time.Sleep(time.Hour)
		synctest.Wait()
		assert.Empty(t, rec.drain(), "nothing fires for it")
		assert.Zero(t, s.size())

		s.failApply(nil)
		// Whether Shutdown reports the error Register returned already is the subject of
		// TestStoreShutdownReportsOnlyWhatItCouldNotWrite.
		if err := h.Shutdown(context.Background()); err != nil {
			assert.ErrorIs(t, err, injected)
		}
	})
}

// The error that Register returned is the program's to handle: once the store works again
// and nothing is pending, Shutdown has nothing to report.
func TestStoreShutdownReportsOnlyWhatItCouldNotWrite(t *testing.T) {
	injected := errors.New("disk full")
	s := newMemStore()
	h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
	s.failApply(injected)
	_, err := h.Register(bgtask.Builder{Name: "job", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
	require.ErrorIs(t, err, injected)
	s.failApply(nil)
	assert.NoError(t, h.Shutdown(context.Background()))
}

func TestStoreRefusesWhatItCannotStore(t *testing.T) {
	watch := func(ctx context.Context, _ func(any) bgtask.ApplicationTriggerResult) error {
		<-ctx.Done()
		return nil
	}
	cases := []struct {
		name string
		b    bgtask.Builder
	}{
		{"CustomTrigger", bgtask.Builder{Trigger: &bgtask.CustomTrigger{Watch: watch}}},
		{"Switch", bgtask.Builder{Trigger: bgtask.NewApplicationTrigger(), Conditions: []bgtask.Condition{bgtask.NewCondition(true)}}},
		{"user-written condition", bgtask.Builder{Trigger: bgtask.NewApplicationTrigger(),
			Conditions: []bgtask.Condition{bgtask.SystemCondition{Type: bgtask.SystemConditionUserPresent}, &flag{on: true}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newMemStore()
			h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
			b := c.b
			b.Name, b.TaskEntryPoint = "job", "job"
			_, err := h.Register(b)
			assert.ErrorIs(t, err, bgtask.ErrNotPersistable)
			_, err = h.Ensure(b)
			assert.ErrorIs(t, err, bgtask.ErrNotPersistable)
			assert.Empty(t, h.AllTasks())
			assert.Zero(t, s.applyCount())

			b.TaskEntryPoint, b.Task = "", returnsAtOnce
			r := mustRegister(t, h, b)
			assert.Equal(t, []uuid.UUID{r.TaskID()}, taskIDs(h.AllTasks()), "without a TaskEntryPoint it stays in memory")
			assert.Zero(t, s.applyCount())
			shutDown(t, h)
		})
	}
}

func TestStoreRestoresRegistrationsAfterARestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		upload := bgtask.TaskFunc(func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			inst.SetProgress(40)
			return errors.New("upload failed: 503")
		})
		builders := func() []bgtask.Builder { // sorted by name, as AllTasks lists them
			return []bgtask.Builder{
				{Name: "net", TaskEntryPoint: "net", Trigger: &bgtask.SystemTrigger{Type: bgtask.SystemTriggerInternetAvailable},
					Conditions:            []bgtask.Condition{bgtask.SystemCondition{Type: bgtask.SystemConditionInternetAvailable}},
					CancelOnConditionLoss: true, MaxExecutionTime: 5 * time.Minute},
				{Name: "tick", TaskEntryPoint: "tick", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}},
				{Name: "upload", TaskEntryPoint: "upload", Trigger: &bgtask.ApplicationTrigger{}},
			}
		}
		h1 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("net", returnsAtOnce),
			bgtask.WithEntryPoint("tick", returnsAtOnce), bgtask.WithEntryPoint("upload", upload))
		var regs []*bgtask.Registration
		for _, b := range builders() {
			regs = append(regs, mustRegister(t, h1, b))
		}
		var oldHandler atomic.Int32
		regs[2].OnCompleted(func(bgtask.CompletedEventArgs) { oldHandler.Add(1) })
		first, res, err := regs[2].Trigger().(*bgtask.ApplicationTrigger).RequestAndWait(context.Background(), nil)
		require.NoError(t, err)
		require.Equal(t, bgtask.Allowed, res)
		require.EqualError(t, first.Err, "upload failed: 503")
		synctest.Wait()
		require.Equal(t, int32(1), oldHandler.Load())
		shutDown(t, h1)
		applies := s.applyCount()

		runs := make(chan bgtask.BackgroundTaskInstance, 4)
		h2 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("net", started(runs, returnsCause)),
			bgtask.WithEntryPoint("tick", returnsAtOnce), bgtask.WithEntryPoint("upload", upload))
		restored := h2.AllTasks()
		require.Equal(t, taskIDs(regs), taskIDs(restored), "listed at once, with their TaskIDs")
		for k, r := range restored {
			assert.Equal(t, regs[k].Name(), r.Name())
			got, ok := h2.Lookup(r.TaskID())
			assert.True(t, ok)
			assert.Same(t, r, got)
		}
		assert.Equal(t, &bgtask.SystemTrigger{Type: bgtask.SystemTriggerInternetAvailable}, restored[0].Trigger())
		assert.Equal(t, &bgtask.TimeTrigger{FreshnessTime: time.Hour}, restored[1].Trigger())
		app, ok := restored[2].Trigger().(*bgtask.ApplicationTrigger)
		require.True(t, ok, "%T", restored[2].Trigger())
		assert.False(t, app.OneShot)
		assert.NotSame(t, regs[2].Trigger(), app, "a new trigger")

		last, ok := restored[2].LastResult()
		require.True(t, ok)
		sameResult(t, first, last)
		for _, r := range restored[:2] {
			_, ok := r.LastResult()
			assert.False(t, ok, r.Name())
		}
		assert.Equal(t, applies, s.applyCount(), "restoring writes nothing")

		// The handlers stay behind; one added again works.
		done := completions(restored[2])
		again, res, err := app.RequestAndWait(context.Background(), nil)
		require.NoError(t, err)
		require.Equal(t, bgtask.Allowed, res)
		assert.EqualError(t, again.Err, "upload failed: 503")
		assert.Equal(t, again.InstanceID, (<-done).InstanceID)
		synctest.Wait()
		assert.Equal(t, int32(1), oldHandler.Load(), "the first host's handler is not restored")

		// The conditions, CancelOnConditionLoss and MaxExecutionTime came back.
		netDone := completions(restored[0])
		h2.SetCondition(bgtask.SystemConditionInternetAvailable, false)
		h2.Signal(bgtask.SystemTriggerInternetAvailable)
		synctest.Wait()
		assert.Empty(t, runs, "the fire is held: its condition does not hold")
		h2.SetCondition(bgtask.SystemConditionInternetAvailable, true)
		<-runs
		h2.SetCondition(bgtask.SystemConditionInternetAvailable, false)
		e := <-netDone
		assert.True(t, e.Canceled)
		assert.Equal(t, bgtask.ConditionLoss, e.Reason, "CancelOnConditionLoss")
		h2.SetCondition(bgtask.SystemConditionInternetAvailable, true)
		h2.Signal(bgtask.SystemTriggerInternetAvailable)
		<-runs
		start := time.Now()
		e = <-netDone
		assert.Equal(t, bgtask.ExecutionTimeExceeded, e.Reason)
		assert.Equal(t, 5*time.Minute, time.Since(start), "MaxExecutionTime")

		// Ensure with the settings they were registered with finds each of them.
		for k, b := range builders() {
			r, err := h2.Ensure(b)
			require.NoError(t, err)
			assert.Same(t, restored[k], r, b.Name)
		}
		assert.Len(t, h2.AllTasks(), 3)
		shutDown(t, h2)
	})
}

func TestStoreLastResultKeepsItsSentinelsAcrossRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		insts := make(chan bgtask.BackgroundTaskInstance, 2)
		release := make(chan struct{})
		stubborn := func(context.Context, bgtask.BackgroundTaskInstance) error { <-release; return nil }
		h1 := newHost(t, bgtask.WithStore(s), bgtask.WithPolicy(bgtask.Policy{GracePeriod: time.Second}),
			bgtask.WithEntryPoint("canceled", started(insts, returnsCause)),
			bgtask.WithEntryPoint("terminated", started(insts, stubborn)),
			bgtask.WithEntryPoint("orphan", returnsAtOnce))
		names := []string{"canceled", "orphan", "terminated"} // as AllTasks sorts them
		trigs := make(map[string]*bgtask.ApplicationTrigger)
		regs := make(map[string]*bgtask.Registration)
		for _, name := range names {
			trigs[name] = bgtask.NewApplicationTrigger()
			regs[name] = mustRegister(t, h1, bgtask.Builder{Name: name, TaskEntryPoint: name, Trigger: trigs[name]})
			_, ok := regs[name].LastResult()
			assert.False(t, ok, "no result before the first")
		}

		done := completions(regs["canceled"])
		mustRequest(t, trigs["canceled"])
		require.True(t, h1.CancelInstance((<-insts).InstanceID(), bgtask.SystemPolicy))
		canceled := <-done
		require.ErrorIs(t, canceled.Err, bgtask.ErrCanceled)

		done = completions(regs["terminated"])
		mustRequest(t, trigs["terminated"])
		require.True(t, h1.CancelInstance((<-insts).InstanceID(), bgtask.SystemPolicy))
		terminated := <-done
		require.ErrorIs(t, terminated.Err, bgtask.ErrTerminated)
		close(release)
		synctest.Wait()
		shutDown(t, h1)

		check := func(h *bgtask.Host) {
			t.Helper()
			last, ok := lookup(t, h, regs["canceled"].TaskID()).LastResult()
			require.True(t, ok)
			assert.ErrorIs(t, last.Err, bgtask.ErrCanceled)
			assert.NotErrorIs(t, last.Err, bgtask.ErrTerminated)
			sameResult(t, canceled, last)
			last, ok = lookup(t, h, regs["terminated"].TaskID()).LastResult()
			require.True(t, ok)
			assert.ErrorIs(t, last.Err, bgtask.ErrTerminated)
			sameResult(t, terminated, last)
		}
		h2 := newHost(t, bgtask.WithStore(s)) // no entry points: every registration is unbound
		check(h2)
		orphan, ok := h2.Lookup(regs["orphan"].TaskID())
		require.True(t, ok)
		_, ok = orphan.LastResult()
		assert.False(t, ok)
		unknown, res, err := orphan.Trigger().(*bgtask.ApplicationTrigger).RequestAndWait(context.Background(), nil)
		require.NoError(t, err)
		require.Equal(t, bgtask.Allowed, res)
		require.ErrorIs(t, unknown.Err, bgtask.ErrUnknownEntryPoint)
		shutDown(t, h2)

		h3 := newHost(t, bgtask.WithStore(s))
		check(h3)
		last, ok := lookup(t, h3, regs["orphan"].TaskID()).LastResult()
		require.True(t, ok)
		assert.ErrorIs(t, last.Err, bgtask.ErrUnknownEntryPoint)
		assert.NotErrorIs(t, last.Err, bgtask.ErrCanceled)
		sameResult(t, unknown, last)
		shutDown(t, h3)
	})
}

func TestStoreCorruptRecordFailsNewHost(t *testing.T) {
	cases := []struct {
		name string
		rec  []byte
		want string
	}{
		{"garbage", []byte("\x00\x01 not a record {"), ""},
		{"unknown version", []byte{99, 3, 'j', 'o', 'b', 3, 'j', 'o', 'b', 0, 0, 0, 0, 0, 0, 0}, "version 99"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			s := newMemStore()
			h1 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
			mustRegister(t, h1, bgtask.Builder{Name: "job", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}})
			shutDown(t, h1)
			bad := uuid.New()
			s.set(bad, c.rec)
			applies := s.applyCount()

			h, err := bgtask.NewHost(bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
			require.Error(t, err)
			assert.Nil(t, h)
			assert.ErrorIs(t, err, bgtask.ErrStoreCorrupt)
			assert.Contains(t, err.Error(), bad.String(), "the error names the TaskID")
			assert.Contains(t, err.Error(), c.want)
			assert.Equal(t, applies, s.applyCount(), "nothing is written")
			got, ok := s.record(bad)
			assert.True(t, ok)
			assert.Equal(t, c.rec, got)
		})
	}
}

func TestStoreLoadFailureFailsNewHost(t *testing.T) {
	injected := errors.New("file locked")
	s := newMemStore()
	s.failLoad(injected)
	h, err := bgtask.NewHost(bgtask.WithStore(s))
	assert.ErrorIs(t, err, injected)
	assert.Nil(t, h)
	assert.Zero(t, s.applyCount())
}

func TestStoreRestoredRegistrationWithoutItsEntryPoint(t *testing.T) {
	s := newMemStore()
	h1 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("report", returnsAtOnce))
	b := bgtask.Builder{Name: "report", TaskEntryPoint: "report", Trigger: bgtask.NewApplicationTrigger()}
	reg := mustRegister(t, h1, b)
	shutDown(t, h1)

	log := new(syncBuffer)
	h2 := newHost(t, bgtask.WithStore(s), bgtask.WithLogger(slogTo(log)))
	assert.Equal(t, []uuid.UUID{reg.TaskID()}, taskIDs(h2.AllTasks()), "it stays listed")
	restored, ok := h2.Lookup(reg.TaskID())
	require.True(t, ok)
	trig, ok := restored.Trigger().(*bgtask.ApplicationTrigger)
	require.True(t, ok, "%T", restored.Trigger())
	for range 2 {
		e, res, err := trig.RequestAndWait(context.Background(), nil)
		require.NoError(t, err)
		require.Equal(t, bgtask.Allowed, res)
		assert.ErrorIs(t, e.Err, bgtask.ErrUnknownEntryPoint)
		assert.Contains(t, e.Err.Error(), `"report"`)
	}
	assert.Equal(t, 2, strings.Count(log.String(), "restored registration without its task"), "each fire is logged")
	_, err := h2.Ensure(b)
	assert.ErrorIs(t, err, bgtask.ErrUnknownEntryPoint, "Ensure needs the entry point bound")
	shutDown(t, h2)
}

func TestStoreTimeSurvivesRestarts(t *testing.T) {
	tick := func() bgtask.Builder {
		return bgtask.Builder{Name: "tick", TaskEntryPoint: "tick", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}}
	}
	t.Run("next time still ahead", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newMemStore()
			rec := newRecorder(nil)
			h1 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("tick", rec))
			mustRegister(t, h1, tick())
			time.Sleep(40 * time.Minute)
			shutDown(t, h1)
			time.Sleep(5 * time.Minute)
			h2 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("tick", rec))
			time.Sleep(time.Hour - 45*time.Minute - time.Second)
			synctest.Wait()
			assert.Empty(t, rec.drain(), "not before its time")
			time.Sleep(time.Second)
			synctest.Wait()
			runs := rec.drain()
			require.Len(t, runs, 1)
			assert.Equal(t, time.Hour, runs[0].at)
			assert.Equal(t, time.Hour, scheduledAt(t, rec.start, runs[0]))
			time.Sleep(time.Hour - time.Second) // past t0+105m, to t0+2h-1s
			synctest.Wait()
			assert.Empty(t, rec.drain(), "the countdown did not restart at NewHost")
			time.Sleep(time.Second)
			synctest.Wait()
			assert.Equal(t, []time.Duration{2 * time.Hour}, runTimes(rec))
			shutDown(t, h2)
		})
	})
	t.Run("next time written after a fire", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newMemStore()
			rec := newRecorder(nil)
			h1 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("tick", rec))
			mustRegister(t, h1, tick())
			time.Sleep(90 * time.Minute)
			synctest.Wait()
			require.Equal(t, []time.Duration{time.Hour}, runTimes(rec))
			shutDown(t, h1)
			time.Sleep(15 * time.Minute)
			h2 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("tick", rec))
			synctest.Wait()
			assert.Empty(t, rec.drain(), "the slot at t0+1h ran before the restart")
			time.Sleep(15 * time.Minute)
			synctest.Wait()
			runs := rec.drain()
			require.Len(t, runs, 1)
			assert.Equal(t, 2*time.Hour, runs[0].at)
			assert.Equal(t, 2*time.Hour, scheduledAt(t, rec.start, runs[0]))
			shutDown(t, h2)
		})
	})
	t.Run("next time written when the fire starts", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newMemStore()
			release := make(chan struct{})
			rec := newRecorder(func(context.Context, bgtask.BackgroundTaskInstance) error { <-release; return nil })
			h1 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("tick", rec))
			mustRegister(t, h1, tick())
			time.Sleep(time.Hour + time.Second) // its instance runs from t0+1h on
			require.Equal(t, []time.Duration{time.Hour}, runTimes(rec))
			crashed := s.clone() // what a crash would leave now, with no result written
			close(release)
			shutDown(t, h1)

			h2 := newHost(t, bgtask.WithStore(crashed), bgtask.WithEntryPoint("tick", rec))
			time.Sleep(time.Hour - 2*time.Second) // to t0+2h-1s
			synctest.Wait()
			assert.Empty(t, rec.drain(), "the slot at t0+1h had started: no catch-up for it")
			time.Sleep(time.Second)
			synctest.Wait()
			assert.Equal(t, []time.Duration{2 * time.Hour}, runTimes(rec))
			shutDown(t, h2)
		})
	})
	t.Run("came due while down", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newMemStore()
			rec := newRecorder(nil)
			h1 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("tick", rec))
			mustRegister(t, h1, tick())
			time.Sleep(30 * time.Minute)
			shutDown(t, h1)
			time.Sleep(3 * time.Hour) // down until t0+3h30m: the slots 1h, 2h and 3h are missed
			h2 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("tick", rec))
			synctest.Wait()
			runs := rec.drain()
			require.Len(t, runs, 1, "one catch-up fire, soon after NewHost")
			assert.Equal(t, 3*time.Hour+30*time.Minute, runs[0].at)
			assert.Equal(t, 3*time.Hour, scheduledAt(t, rec.start, runs[0]), "for the latest missed slot")
			time.Sleep(30*time.Minute - time.Second)
			synctest.Wait()
			assert.Empty(t, rec.drain())
			time.Sleep(time.Second)
			synctest.Wait()
			runs = rec.drain()
			require.Len(t, runs, 1)
			assert.Equal(t, 4*time.Hour, runs[0].at, "on its grid")
			assert.Equal(t, 4*time.Hour, scheduledAt(t, rec.start, runs[0]))
			shutDown(t, h2)
		})
	})
}

func TestStoreEnsure(t *testing.T) {
	t.Run("registers when nothing matches", func(t *testing.T) {
		s := newMemStore()
		h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
		other := mustRegister(t, h, bgtask.Builder{Name: "job", Task: returnsAtOnce, Trigger: bgtask.NewApplicationTrigger()})
		r, err := h.Ensure(bgtask.Builder{Name: "job", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
		require.NoError(t, err)
		assert.NotEqual(t, other.TaskID(), r.TaskID(), "the same Name with another TaskEntryPoint is another registration")
		assert.Len(t, h.AllTasks(), 2)
		_, ok := s.record(r.TaskID())
		assert.True(t, ok)
		shutDown(t, h)
	})
	t.Run("same settings keep the countdown", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newMemStore()
			rec := newRecorder(nil)
			h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("tick", rec))
			b := func() bgtask.Builder {
				return bgtask.Builder{Name: "tick", TaskEntryPoint: "tick", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}}
			}
			r1, err := h.Ensure(b())
			require.NoError(t, err)
			time.Sleep(30 * time.Minute)
			r2, err := h.Ensure(b())
			require.NoError(t, err)
			assert.Same(t, r1, r2)
			time.Sleep(time.Hour)
			synctest.Wait()
			assert.Equal(t, []time.Duration{time.Hour}, runTimes(rec), "at t0+1h, not t0+1h30m")
			shutDown(t, h)
		})
	})
	t.Run("same settings bind the new trigger", func(t *testing.T) {
		s := newMemStore()
		h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
		first := bgtask.NewApplicationTrigger()
		r1, err := h.Ensure(bgtask.Builder{Name: "job", TaskEntryPoint: "job", Trigger: first})
		require.NoError(t, err)
		second := bgtask.NewApplicationTrigger()
		r2, err := h.Ensure(bgtask.Builder{Name: "job", TaskEntryPoint: "job", Trigger: second})
		require.NoError(t, err)
		assert.Same(t, r1, r2)
		assert.Len(t, h.AllTasks(), 1)
		e, res, err := second.RequestAndWait(context.Background(), nil)
		require.NoError(t, err)
		assert.Equal(t, bgtask.Allowed, res, "the new trigger fires the registration")
		assert.NoError(t, e.Err)
		last, ok := r1.LastResult()
		assert.True(t, ok)
		assert.Equal(t, e.InstanceID, last.InstanceID)
		shutDown(t, h)
	})
	t.Run("other settings update in place", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newMemStore()
			runs := make(chan bgtask.BackgroundTaskInstance, 4)
			h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", started(runs, returnsCause)))
			b := bgtask.Builder{Name: "job", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()}
			r, err := h.Ensure(b)
			require.NoError(t, err)
			mustRequest(t, b.Trigger.(*bgtask.ApplicationTrigger))
			inst := <-runs
			done := completions(r)
			require.True(t, h.CancelInstance(inst.InstanceID(), bgtask.Abort))
			first := <-done

			b.Trigger = bgtask.NewApplicationTrigger()
			b.MaxExecutionTime = time.Minute
			b.Conditions = []bgtask.Condition{bgtask.SystemCondition{Type: bgtask.SystemConditionInternetAvailable}}
			updated, err := h.Ensure(b)
			require.NoError(t, err)
			assert.Same(t, r, updated)
			assert.Equal(t, r.TaskID(), updated.TaskID())
			last, ok := updated.LastResult()
			require.True(t, ok)
			assert.Equal(t, first.InstanceID, last.InstanceID, "the last result is kept")
			assert.Len(t, h.AllTasks(), 1)

			h.SetCondition(bgtask.SystemConditionInternetAvailable, false)
			mustRequest(t, b.Trigger.(*bgtask.ApplicationTrigger))
			synctest.Wait()
			assert.Empty(t, runs, "held by the new condition")
			h.SetCondition(bgtask.SystemConditionInternetAvailable, true)
			<-runs
			start := time.Now()
			e := <-done
			assert.Equal(t, bgtask.ExecutionTimeExceeded, e.Reason)
			assert.Equal(t, time.Minute, time.Since(start), "the new MaxExecutionTime")
			shutDown(t, h)

			// The update was stored.
			h2 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", started(runs, returnsCause)))
			restored := lookup(t, h2, r.TaskID())
			done = completions(restored)
			mustRequest(t, restored.Trigger().(*bgtask.ApplicationTrigger))
			<-runs
			start = time.Now()
			e = <-done
			assert.Equal(t, bgtask.ExecutionTimeExceeded, e.Reason)
			assert.Equal(t, time.Minute, time.Since(start))
			shutDown(t, h2)
		})
	})
	for _, c := range []struct {
		name   string
		change func(*bgtask.Builder)
		want   []time.Duration
	}{
		{"MaxExecutionTime changed keeps the countdown", func(b *bgtask.Builder) { b.MaxExecutionTime = 10 * time.Minute }, []time.Duration{time.Hour, 2 * time.Hour}},
		{"FreshnessTime changed restarts it", func(b *bgtask.Builder) { b.Trigger = &bgtask.TimeTrigger{FreshnessTime: 2 * time.Hour} }, []time.Duration{150 * time.Minute}},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newMemStore()
				rec := newRecorder(nil)
				h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("tick", rec))
				b := bgtask.Builder{Name: "tick", TaskEntryPoint: "tick", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}}
				r1, err := h.Ensure(b)
				require.NoError(t, err)
				time.Sleep(30 * time.Minute)
				c.change(&b)
				r2, err := h.Ensure(b)
				require.NoError(t, err)
				assert.Same(t, r1, r2)
				time.Sleep(2*time.Hour + time.Second) // to t0+2h30m+1s
				synctest.Wait()
				assert.Equal(t, c.want, runTimes(rec))
				shutDown(t, h)
			})
		})
	}
	t.Run("several matches", func(t *testing.T) {
		s := newMemStore()
		h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
		for range 2 {
			mustRegister(t, h, bgtask.Builder{Name: "job", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
		}
		r, err := h.Ensure(bgtask.Builder{Name: "job", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
		assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
		assert.Nil(t, r)
		assert.Len(t, h.AllTasks(), 2)
		shutDown(t, h)
	})
	t.Run("finds a restored registration", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newMemStore()
			rec := newRecorder(nil)
			b := func() bgtask.Builder {
				return bgtask.Builder{Name: "backup", TaskEntryPoint: "backup", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}}
			}
			h1 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("backup", rec))
			r1, err := h1.Ensure(b())
			require.NoError(t, err)
			time.Sleep(20 * time.Minute)
			shutDown(t, h1)

			h2 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("backup", rec))
			r2, err := h2.Ensure(b())
			require.NoError(t, err)
			assert.Equal(t, r1.TaskID(), r2.TaskID())
			assert.Equal(t, []uuid.UUID{r1.TaskID()}, taskIDs(h2.AllTasks()))
			assert.Equal(t, 1, s.size())
			time.Sleep(40 * time.Minute)
			synctest.Wait()
			assert.Equal(t, []time.Duration{time.Hour}, runTimes(rec), "the countdown went on")
			shutDown(t, h2)
		})
	})
}

func TestStoreUnregisterDeletesTheRecord(t *testing.T) {
	s := newMemStore()
	h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
	keep := mustRegister(t, h, bgtask.Builder{Name: "keep", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
	gone := mustRegister(t, h, bgtask.Builder{Name: "gone", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
	gone.Unregister(false)
	_, ok := s.record(gone.TaskID())
	assert.False(t, ok, "deleted before Unregister returns")
	_, ok = s.record(keep.TaskID())
	assert.True(t, ok)
	shutDown(t, h)
	h2 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
	assert.Equal(t, []uuid.UUID{keep.TaskID()}, taskIDs(h2.AllTasks()))
	shutDown(t, h2)
}

func TestStoreOneShotRecordIsDeletedWhenItsInstanceStarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		runs := make(chan bgtask.BackgroundTaskInstance, 1)
		release := make(chan struct{})
		task := started(runs, func(context.Context, bgtask.BackgroundTaskInstance) error { <-release; return nil })
		h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("once", task))
		trig := &bgtask.ApplicationTrigger{OneShot: true}
		reg := mustRegister(t, h, bgtask.Builder{Name: "once", TaskEntryPoint: "once", Trigger: trig})
		mustRequest(t, trig)
		<-runs
		_, ok := s.record(reg.TaskID())
		assert.False(t, ok, "deleted before Run was called: a crash while it runs does not run it again")
		close(release)
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Zero(t, s.size(), "its result does not write it back")
		shutDown(t, h)
		h2 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("once", task))
		assert.Empty(t, h2.AllTasks())
		shutDown(t, h2)
	})
}

func TestStoreBatchesResultsAndNextTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 10_000 // as many as the issue asks to fire within one second
		s := newMemStore()
		var ran atomic.Int32
		task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { ran.Add(1); return nil })
		h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("tick", task))
		for k := range n {
			mustRegister(t, h, bgtask.Builder{Name: fmt.Sprintf("tick-%05d", k), TaskEntryPoint: "tick",
				Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
		}
		require.Equal(t, n, s.applyCount(), "each Register is one Apply")
		time.Sleep(time.Minute + time.Second) // all fire at t0+1m, and finish at once
		synctest.Wait()
		require.Equal(t, int32(n), ran.Load())
		writes := s.applyCount() - n
		assert.Positive(t, writes)
		assert.LessOrEqual(t, writes, 10, "the results and next times of %d fires in one second", n)
		shutDown(t, h)
		assert.Equal(t, n+writes, s.applyCount(), "nothing was left for Shutdown to write")

		// What was written: every result, and every next time (t0+2m).
		h2 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("tick", task))
		regs := h2.AllTasks()
		require.Len(t, regs, n)
		for _, r := range regs {
			_, ok := r.LastResult()
			require.True(t, ok, r.Name())
		}
		time.Sleep(time.Minute - 2*time.Second) // to t0+2m-1s
		synctest.Wait()
		assert.Equal(t, int32(n), ran.Load(), "no catch-up for the slot at t0+1m")
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, int32(2*n), ran.Load())
		shutDown(t, h2)
	})
}

func TestStoreShutdownWritesWhatIsPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		failing := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return errors.New("quota exceeded") })
		h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", failing))
		trig := bgtask.NewApplicationTrigger()
		reg := mustRegister(t, h, bgtask.Builder{Name: "job", TaskEntryPoint: "job", Trigger: trig})
		applies := s.applyCount()
		e, _, err := trig.RequestAndWait(context.Background(), nil)
		require.NoError(t, err)
		synctest.Wait()
		require.Equal(t, applies, s.applyCount(), "the result waits to be written with others")
		shutDown(t, h) // no time passed: less than saveDelay
		assert.Equal(t, applies+1, s.applyCount(), "Shutdown wrote it")

		h2 := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", failing))
		last, ok := lookup(t, h2, reg.TaskID()).LastResult()
		require.True(t, ok)
		sameResult(t, e, last)
		shutDown(t, h2)
	})
}

func TestStoreFailingWritesAreLoggedAndReturnedByShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		injected := errors.New("disk full")
		s := newMemStore()
		log := new(syncBuffer)
		var ran atomic.Int32
		task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { ran.Add(1); return nil })
		h := newHost(t, bgtask.WithStore(s), bgtask.WithLogger(slogTo(log)), bgtask.WithEntryPoint("job", task))
		trig := bgtask.NewApplicationTrigger()
		mustRegister(t, h, bgtask.Builder{Name: "job", TaskEntryPoint: "job", Trigger: trig})
		mustRegister(t, h, bgtask.Builder{Name: "tick", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Minute}})
		s.failApply(injected)

		for range 3 {
			e, res, err := trig.RequestAndWait(context.Background(), nil)
			require.NoError(t, err)
			require.Equal(t, bgtask.Allowed, res)
			require.NoError(t, e.Err)
			time.Sleep(time.Minute)
		}
		synctest.Wait()
		assert.Equal(t, int32(6), ran.Load(), "the host works on while its store fails")
		assert.Contains(t, log.String(), "store write failed")
		assert.Contains(t, log.String(), injected.Error())

		err := h.Shutdown(context.Background())
		require.ErrorIs(t, err, injected)
		assert.NotErrorIs(t, err, bgtask.ErrTerminated)
	})
}

func TestStoreConcurrentRegistersShareTransactions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 16
		s := newMemStore()
		s.gate = make(chan struct{})
		s.entered = make(chan struct{}, n)
		h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for k := range n {
			wg.Go(func() {
				_, err := h.Register(bgtask.Builder{Name: fmt.Sprintf("job-%02d", k), TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
				errs <- err
			})
		}
		synctest.Wait() // the first Apply waits at the gate, and the other Registers behind it
		close(s.gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		applies := s.applyCount()
		assert.Less(t, applies, n)
		assert.LessOrEqual(t, applies, 2, "the Registers that waited share one transaction")
		assert.Len(t, h.AllTasks(), n)
		assert.Equal(t, n, s.size())
		shutDown(t, h)
	})
}

func TestStoreNextFireSurvivesRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		start := time.Now()
		h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
		r := mustRegister(t, h, bgtask.Builder{Name: "t", TaskEntryPoint: "job", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}})
		next, ok := r.NextFire()
		require.True(t, ok)
		assert.Equal(t, start.Add(time.Hour), next)
		app := mustRegister(t, h, bgtask.Builder{Name: "a", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
		_, ok = app.NextFire()
		assert.False(t, ok, "not time-triggered")
		shutDown(t, h)
		time.Sleep(10 * time.Minute)
		h = newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
		r, ok = h.Lookup(r.TaskID())
		require.True(t, ok)
		next, ok = r.NextFire()
		require.True(t, ok)
		assert.Equal(t, start.Add(time.Hour), next.Round(time.Millisecond), "the countdown goes on")
		r.Unregister(false)
		_, ok = r.NextFire()
		assert.False(t, ok, "unregistered")
		shutDown(t, h)
	})
}

// A Register whose write was under way when Shutdown came is refused, and its record is
// deleted before it returns: it does not come back at the next start.
func TestStoreRegisterRefusedByAShutdownLeavesNoRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		h := newHost(t, bgtask.WithStore(s), bgtask.WithEntryPoint("job", returnsAtOnce))
		s.gate = make(chan struct{})
		registered := make(chan error, 1)
		go func() {
			_, err := h.Register(bgtask.Builder{Name: "late", TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
			registered <- err
		}()
		synctest.Wait() // Register waits for its write
		shutdown := make(chan error, 1)
		go func() { shutdown <- h.Shutdown(context.Background()) }()
		synctest.Wait() // Shutdown closed the host and waits for the store
		close(s.gate)
		require.ErrorIs(t, <-registered, bgtask.ErrHostClosed)
		require.NoError(t, <-shutdown)
		assert.Zero(t, s.size(), "the record written for it is deleted")
	})
}

// storeHost returns a host on s whose entry point "ep" runs nopTask.
func storeHost(t *testing.T, s bgtask.Store) *bgtask.Host {
	t.Helper()
	return newHost(t, bgtask.WithLogger(nil), bgtask.WithStore(s), bgtask.WithEntryPoint("ep", nopTask))
}

// An Ensure that changes a registration is durable when it returns, even when a write of
// the registration's result or next time is pending (here the catch-up fire's, just after
// a restart): that write does not put the old settings back.
func TestStoreEnsureUpdateIsKeptWhileAWriteIsPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		h := storeHost(t, s)
		b := bgtask.Builder{Name: "tick", TaskEntryPoint: "ep", Trigger: &bgtask.TimeTrigger{FreshnessTime: 10 * time.Minute}}
		r := mustRegister(t, h, b)
		shutDown(t, h)
		time.Sleep(15 * time.Minute) // down across a slot
		h = storeHost(t, s)          // its catch-up fires
		synctest.Wait()
		b.Trigger = &bgtask.TimeTrigger{FreshnessTime: time.Hour}
		_, err := h.Ensure(b)
		require.NoError(t, err)
		crashed := s.clone() // what a crash right after Ensure returned would leave
		time.Sleep(time.Minute)
		shutDown(t, h)
		for _, st := range []*memStore{crashed, s} {
			h := storeHost(t, st)
			assert.Equal(t, "TimeTrigger every 1h0m0s", lookup(t, h, r.TaskID()).TriggerString())
			shutDown(t, h)
		}
	})
}

// Ensures of one name at once register it once.
func TestStoreConcurrentEnsuresRegisterOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		h := storeHost(t, s)
		gate := make(chan struct{})
		s.mu.Lock()
		s.gate = gate // each Ensure's store write waits here, with the other Ensure under way
		s.mu.Unlock()
		b := bgtask.Builder{Name: "job", TaskEntryPoint: "ep", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}}
		got := make(chan *bgtask.Registration, 2)
		for range 2 {
			go func() {
				r, err := h.Ensure(b)
				assert.NoError(t, err)
				got <- r
			}()
			synctest.Wait()
		}
		s.mu.Lock()
		s.gate = nil
		s.mu.Unlock()
		close(gate)
		assert.Same(t, <-got, <-got)
		assert.Len(t, h.AllTasks(), 1)
		_, err := h.Ensure(b)
		assert.NoError(t, err, "and a later Ensure finds one")
		shutDown(t, h)
	})
}

// An Unregister that races with an Ensure of the same registration comes before it or
// after it: what the host lists when both returned is what a restart finds.
func TestStoreEnsureRacingUnregister(t *testing.T) {
	for range 100 {
		s := newMemStore()
		h := storeHost(t, s)
		b := bgtask.Builder{Name: "job", TaskEntryPoint: "ep", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}}
		var wg sync.WaitGroup
		for k := range 4 {
			wg.Go(func() {
				for n := range 20 {
					b := b
					b.MaxExecutionTime = time.Duration(k*20+n) * time.Second // an update each time
					r, err := h.Ensure(b)
					if assert.NoError(t, err) {
						assert.NotNil(t, r)
					}
				}
			})
		}
		wg.Go(func() {
			for range 20 {
				for _, r := range h.AllTasks() {
					r.Unregister(false)
				}
			}
		})
		wg.Wait()
		live := taskIDs(h.AllTasks())
		shutDown(t, h)
		h = storeHost(t, s)
		require.ElementsMatch(t, live, taskIDs(h.AllTasks()))
		shutDown(t, h)
	}
}

// A task's error whose text is empty is still an error after a restart.
func TestStoreKeepsAnErrorWithoutText(t *testing.T) {
	s := newMemStore()
	h := newHost(t, bgtask.WithLogger(nil), bgtask.WithStore(s),
		bgtask.WithEntryPoint("ep", bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return errors.New("") })))
	trig := bgtask.NewApplicationTrigger()
	r := mustRegister(t, h, bgtask.Builder{Name: "n", TaskEntryPoint: "ep", Trigger: trig})
	e, _, err := trig.RequestAndWait(t.Context(), nil)
	require.NoError(t, err)
	require.Error(t, e.Err)
	shutDown(t, h)
	h = storeHost(t, s)
	last, ok := lookup(t, h, r.TaskID()).LastResult()
	require.True(t, ok)
	require.Error(t, last.Err, "a failure, not a success")
	assert.Empty(t, last.Err.Error())
	shutDown(t, h)
}

// Shutdown returns when its ctx ends, even while a background write is stuck in the store.
func TestStoreShutdownEndsWithItsContextWhileAWriteIsStuck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		h := storeHost(t, s)
		trig := bgtask.NewApplicationTrigger()
		mustRegister(t, h, bgtask.Builder{Name: "n", TaskEntryPoint: "ep", Trigger: trig})
		gate := make(chan struct{})
		s.mu.Lock()
		s.gate = gate // the result's write, in the background, waits here
		s.mu.Unlock()
		_, _, err := trig.RequestAndWait(t.Context(), nil)
		require.NoError(t, err)
		time.Sleep(time.Second) // the batch's write began
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		err = h.Shutdown(ctx)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 5*time.Second, time.Since(start))
		close(gate)
		synctest.Wait()
	})
}

// A result that came while an Ensure updated its registration is written by a Shutdown
// that comes meanwhile: Shutdown waits for the update before its last write.
func TestStoreShutdownWaitsForAnEnsureUnderWay(t *testing.T) {
	lost := 0
	const runs = 30
	for range runs {
		synctest.Test(t, func(t *testing.T) {
			s := newMemStore()
			failing := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return errors.New("boom") })
			h := newHost(t, bgtask.WithLogger(nil), bgtask.WithStore(s), bgtask.WithEntryPoint("ep", failing))
			trig := bgtask.NewApplicationTrigger()
			b := bgtask.Builder{Name: "job", TaskEntryPoint: "ep", Trigger: trig}
			r := mustRegister(t, h, b)
			gate := make(chan struct{})
			s.mu.Lock()
			s.gate = gate
			s.mu.Unlock()
			go h.Register(bgtask.Builder{Name: "other", TaskEntryPoint: "ep", Trigger: bgtask.NewApplicationTrigger()}) // a write under way
			synctest.Wait()
			b2 := b
			b2.MaxExecutionTime = time.Minute // other settings: an update
			ensured := make(chan error, 1)
			go func() { _, err := h.Ensure(b2); ensured <- err }()
			synctest.Wait() // Ensure's write waits behind it; r.updating is set
			s.mu.Lock()
			s.gate = nil
			s.mu.Unlock()
			_, _, err := trig.RequestAndWait(t.Context(), nil) // r fails meanwhile: its result is pending
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() { done <- h.Shutdown(context.Background()) }()
			synctest.Wait() // Shutdown's final flush waits for the token
			close(gate)
			require.NoError(t, <-done, "Shutdown reports a clean end")
			<-ensured
			h2 := newHost(t, bgtask.WithLogger(nil), bgtask.WithStore(s), bgtask.WithEntryPoint("ep", failing))
			if _, ok := lookup(t, h2, r.TaskID()).LastResult(); !ok {
				lost++
			}
			shutDown(t, h2)
		})
	}
	assert.Zero(t, lost, "the result completed before Shutdown was lost in %d of %d runs", lost, runs)
}

// A: Shutdown with a ctx that has already ended (e.g. a task overran it) skips the final
// write at random, with nothing stuck: flush's select picks ctx.Done() half the time.

// A Shutdown whose ctx has already ended still makes its last write when no other write
// is under way (a store that honours ctx may refuse it).
func TestStoreShutdownWithAnEndedContextStillWrites(t *testing.T) {
	skipped := 0
	const runs = 40
	for range runs {
		synctest.Test(t, func(t *testing.T) {
			s := newMemStore() // ignores ctx when no gate is set
			h := newHost(t, bgtask.WithLogger(nil), bgtask.WithStore(s), bgtask.WithEntryPoint("ep", nopTask))
			trig := bgtask.NewApplicationTrigger()
			mustRegister(t, h, bgtask.Builder{Name: "n", TaskEntryPoint: "ep", Trigger: trig})
			_, _, err := trig.RequestAndWait(t.Context(), nil)
			require.NoError(t, err) // its result waits for the batch
			synctest.Wait()
			before := s.applyCount()
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_ = h.Shutdown(ctx)
			if s.applyCount() == before {
				skipped++
			}
			_ = h.Shutdown(context.Background())
		})
	}
	assert.Zero(t, skipped, "the final write was skipped in %d of %d runs, with no write stuck", skipped, runs)
}

// C: a persistent OneShot's instance deletes its record before Run, but its
// MaxExecutionTime (and IdleTimeout) timers already run: a store write slower than
// MaxExecutionTime + the grace period terminates the instance before Run, and the record is
// deleted: the OneShot never runs, here or after a restart.

// A OneShot whose record takes long to delete still runs: its time limit counts from
// when the delete is done.
func TestStoreOneShotRunsAfterASlowDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		var ran atomic.Bool
		task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { ran.Store(true); return nil })
		h := newHost(t, bgtask.WithLogger(nil), bgtask.WithStore(s), bgtask.WithEntryPoint("once", task))
		trig := &bgtask.ApplicationTrigger{OneShot: true}
		reg := mustRegister(t, h, bgtask.Builder{Name: "once", TaskEntryPoint: "once", Trigger: trig, MaxExecutionTime: time.Second})
		gate := make(chan struct{})
		s.mu.Lock()
		s.gate = gate
		s.mu.Unlock()
		done := completions(reg)
		mustRequest(t, trig)
		time.Sleep(10 * time.Second) // the delete takes 10 s
		close(gate)
		synctest.Wait()
		e := <-done
		_, kept := s.record(reg.TaskID())
		assert.True(t, ran.Load(), "Run was never called: %v", e.Err)
		assert.True(t, ran.Load() || kept, "and its record is gone: it never runs")
		shutDown(t, h)
	})
}

// D: with a Dispatcher (TaskIDs derived from the name), a OneShot system trigger's delete,
// now on the instance's goroutine, shares a transaction with a Register of the same name
// that came meanwhile: the new registration's record is deleted (Apply: put+del = delete).

// ambiguous is a condition of a comparable type that may hold a value that is not.
type ambiguous struct{ V any }

func (ambiguous) Satisfied(*bgtask.Host) bool              { return true }
func (ambiguous) Watch(*bgtask.Host, func()) (stop func()) { return func() {} }

// Ensure compares the conditions it is given with the registration's: a condition whose
// == panics is taken as changed, not a panic under the host's lock.
func TestStoreEnsureWithAConditionThatCannotBeCompared(t *testing.T) {
	h := newHost(t, bgtask.WithLogger(nil))
	b := bgtask.Builder{Name: "c", Task: nopTask, Trigger: bgtask.NewApplicationTrigger(), Conditions: []bgtask.Condition{ambiguous{[]int{1}}}}
	r := mustRegister(t, h, b)
	got, err := h.Ensure(b)
	require.NoError(t, err)
	assert.Same(t, r, got, "updated in place")
	shutDown(t, h)
}

// An Ensure's update that found a registration which Unregister then removed writes its
// record again; when Shutdown closes the host during that write, the update still deletes
// the record again: the next host does not restore the registration.
func TestUpdateAfterUnregisterDuringShutdownDeletesTheRecordAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		h := storeHost(t, s)
		b := bgtask.Builder{Name: "job", TaskEntryPoint: "ep", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}}
		r := mustRegister(t, h, b)
		// What Ensure does after its scan found r, with Unregister coming right after the scan.
		r.Unregister(false)
		require.Zero(t, s.size(), "Unregister's delete is durable")
		b.MaxExecutionTime = time.Minute
		gate := make(chan struct{})
		s.mu.Lock()
		s.gate = gate
		s.mu.Unlock()
		res := make(chan error, 1)
		go func() { res <- bgtask.UpdateForTest(h, r, b) }()
		synctest.Wait() // update's write waits in Apply
		shut := make(chan error, 1)
		go func() { shut <- h.Shutdown(context.Background()) }()
		synctest.Wait() // the host is closed
		s.mu.Lock()
		s.gate = nil
		s.mu.Unlock()
		close(gate)
		t.Logf("update: %v", <-res)
		t.Logf("Shutdown: %v", <-shut)
		h2 := storeHost(t, s)
		_, back := h2.Lookup(r.TaskID())
		assert.False(t, back, "the registration the program unregistered is restored")
		shutDown(t, h2)
	})
}

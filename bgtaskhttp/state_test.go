package bgtaskhttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskhttp"
)

// plainCondition is a condition the program wrote, without a String method.
type plainCondition struct{}

func (plainCondition) Satisfied(*bgtask.Host) bool              { return true }
func (plainCondition) Watch(*bgtask.Host, func()) (stop func()) { return func() {} }

// panickyCondition has a String method that panics: the state must still be served.
type panickyCondition struct{ plainCondition }

func (panickyCondition) String() string { panic("no name") }

// working is a task that sets its progress to 40, takes a deferral and starts a Go func,
// reports that on started and holds its instance until it is canceled.
func working(started chan<- bgtask.BackgroundTaskInstance) bgtask.TaskFunc {
	return func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		inst.SetProgress(40)
		d := inst.GetDeferral()
		inst.Go(func(ctx context.Context) error { <-ctx.Done(); return nil })
		started <- inst
		<-ctx.Done()
		d.Complete()
		return nil
	}
}

func TestStateShape(t *testing.T) {
	synctest.Test(t, testStateShape)
}

func testStateShape(t *testing.T) {
	h := newHost(t)
	hd := bgtaskhttp.New(h, bgtaskhttp.AllowCancel())
	before := time.Now()
	_, err := h.Register(bgtask.Builder{Name: "sync", Trigger: &bgtask.TimeTrigger{FreshnessTime: 15 * time.Minute},
		Task: newBlocker(), Conditions: []bgtask.Condition{
			bgtask.SystemCondition{Type: bgtask.SystemConditionInternetAvailable}, plainCondition{}, panickyCondition{}}})
	require.NoError(t, err)
	started := make(chan bgtask.BackgroundTaskInstance, 1)
	dl := start(t, h, "download", working(started))
	inst := <-started
	failing := run(t, h, "failing", errors.New("disk full"))
	synctest.Wait() // the completion reaches the handler

	w := serve(hd, http.MethodGet, "/api/state")
	require.Equal(t, http.StatusOK, w.Code)
	assert.Equal(t, "application/json", w.Header().Get("Content-Type"))
	st := decodeState(t, w.Body.Bytes())

	require.Len(t, st.Registrations, 3)
	assert.Equal(t, []string{"download", "failing", "sync"},
		[]string{st.Registrations[0].Name, st.Registrations[1].Name, st.Registrations[2].Name}, "sorted by name")
	sync := st.Registrations[2]
	assert.Equal(t, "TimeTrigger every 15m0s", sync.Trigger)
	assert.Equal(t, []string{"InternetAvailable", "bgtaskhttp_test.plainCondition",
		"%!v(PANIC=String method: no name)"}, sync.Conditions)
	assert.Empty(t, sync.Running)
	assert.Nil(t, sync.LastResult)

	down := st.Registrations[0]
	assert.Equal(t, dl.TaskID().String(), down.TaskID)
	assert.Equal(t, "ApplicationTrigger", down.Trigger)
	assert.Equal(t, []string{inst.InstanceID().String()}, down.Running)

	require.Len(t, st.Instances, 1)
	in := st.Instances[0]
	assert.Equal(t, instanceJSON{InstanceID: inst.InstanceID().String(), TaskID: dl.TaskID().String(),
		Name: "download", State: "Running", Started: in.Started, Progress: 40, Deferrals: in.Deferrals}, in)
	assertStamp(t, before, in.Started)
	require.Len(t, in.Deferrals, 2)
	for k, wantGo := range []bool{false, true} {
		d := in.Deferrals[k]
		assert.Equal(t, wantGo, d.Go)
		assert.Regexp(t, `^state_test\.go:\d+$`, d.Site)
		assertStamp(t, before, d.Taken)
	}

	last := st.Registrations[1].LastResult
	require.NotNil(t, last)
	assert.Equal(t, failing.TaskID().String(), last.TaskID)
	assert.Equal(t, "disk full", last.Error)
	assertStamp(t, before, last.Started)
	assertStamp(t, before, last.Finished)
	require.Len(t, st.Recent, 1)
	assert.Equal(t, *last, st.Recent[0])

	// Canceled: the reason is named, on the instance and then on its result.
	require.True(t, h.CancelInstance(inst.InstanceID(), bgtask.QuietHoursEntered))
	st = getState(t, hd)
	if len(st.Instances) == 1 { // it may have finished already
		assert.Equal(t, "Canceling", st.Instances[0].State)
		assert.Equal(t, "QuietHoursEntered", st.Instances[0].Reason)
	}
	synctest.Wait()
	st = getState(t, hd)
	require.Len(t, st.Recent, 2)
	assert.Equal(t, resultJSON{InstanceID: inst.InstanceID().String(), TaskID: dl.TaskID().String(), Name: "download",
		Started: st.Recent[0].Started, Finished: st.Recent[0].Finished, Canceled: true, Reason: "QuietHoursEntered",
		Progress: 40}, st.Recent[0], "newest first")
	assert.Equal(t, st.Recent[0], *st.Registrations[0].LastResult)
}

// assertStamp checks that s is a time in the state's format, from after before.
func assertStamp(t *testing.T, before time.Time, s string) {
	t.Helper()
	assert.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`, s)
	at, err := time.Parse(time.RFC3339, s)
	if assert.NoError(t, err) {
		assert.False(t, at.Before(before.Truncate(time.Millisecond)), "%s is before %s", s, before)
		assert.False(t, at.After(time.Now()), "%s is in the future", s)
	}
}

// TestStateKeys checks the exact key set of every object of the state.
func TestStateKeys(t *testing.T) {
	synctest.Test(t, testStateKeys)
}

func testStateKeys(t *testing.T) {
	h := newHost(t)
	hd := bgtaskhttp.New(h)
	run(t, h, "done", nil)
	started := make(chan bgtask.BackgroundTaskInstance, 1)
	start(t, h, "working", working(started))
	<-started
	synctest.Wait()

	var st map[string]any
	require.NoError(t, json.Unmarshal(serve(hd, http.MethodGet, "/api/state").Body.Bytes(), &st))
	result := []string{"canceled", "error", "finished", "instance_id", "name", "progress", "reason", "started", "task_id"}
	assertKeys(t, st, "instances", "recent", "registrations")
	for _, r := range st["registrations"].([]any) {
		r := r.(map[string]any)
		assertKeys(t, r, "conditions", "last_result", "name", "running", "task_id", "trigger")
		if last := r["last_result"]; last != nil {
			assertKeys(t, last.(map[string]any), result...)
		}
	}
	for _, in := range st["instances"].([]any) {
		in := in.(map[string]any)
		assertKeys(t, in, "deferrals", "instance_id", "name", "progress", "reason", "started", "state",
			"suspended_count", "task_id")
		for _, d := range in["deferrals"].([]any) {
			assertKeys(t, d.(map[string]any), "go", "site", "taken")
		}
	}
	for _, r := range st["recent"].([]any) {
		assertKeys(t, r.(map[string]any), result...)
	}
}

func assertKeys(t *testing.T, obj map[string]any, keys ...string) {
	t.Helper()
	assert.Equal(t, keys, slices.Sorted(maps.Keys(obj)))
}

// TestStateEmpty: lists are [] rather than null, and a registration that never ran has a
// null last_result.
func TestStateEmpty(t *testing.T) {
	h := newHost(t)
	hd := bgtaskhttp.New(h)
	assert.JSONEq(t, `{"registrations":[],"instances":[],"recent":[]}`, serve(hd, http.MethodGet, "/api/state").Body.String())

	reg, err := h.Register(bgtask.Builder{Name: "idle", Trigger: bgtask.NewApplicationTrigger(), Task: newBlocker()})
	require.NoError(t, err)
	assert.JSONEq(t, `{"registrations":[{"task_id":"`+reg.TaskID().String()+`","name":"idle","trigger":"ApplicationTrigger",
		"conditions":[],"running":[],"last_result":null}],"instances":[],"recent":[]}`,
		serve(hd, http.MethodGet, "/api/state").Body.String())
}

// TestStateRecentKeepsTheLast100 runs 105 instances: recent lists the last 100, newest
// first.
func TestStateRecentKeepsTheLast100(t *testing.T) {
	synctest.Test(t, testStateRecentKeepsTheLast100)
}

func testStateRecentKeepsTheLast100(t *testing.T) {
	h := newHost(t)
	hd := bgtaskhttp.New(h)
	trig := bgtask.NewApplicationTrigger()
	_, err := h.Register(bgtask.Builder{Name: "n", Trigger: trig, Task: bgtask.TaskFunc(
		func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
			k, err := bgtask.Arg[int](inst, "k")
			require.NoError(t, err)
			return errors.New(strconv.Itoa(k))
		})})
	require.NoError(t, err)
	for k := range 105 {
		_, _, err := trig.RequestAndWait(context.Background(), map[string]any{"k": k})
		require.NoError(t, err)
	}
	synctest.Wait()
	st := getState(t, hd)
	require.Len(t, st.Recent, 100)
	for k, r := range st.Recent {
		assert.Equal(t, strconv.Itoa(104-k), r.Error)
	}
}

// TestStateDroppedFire: a fire held and dropped never started, so its result has no start.
func TestStateDroppedFire(t *testing.T) {
	synctest.Test(t, testStateDroppedFire)
}

func testStateDroppedFire(t *testing.T) {
	h := newHost(t)
	hd := bgtaskhttp.New(h)
	never := bgtask.NewCondition(false)
	trig := bgtask.NewApplicationTrigger()
	reg, err := h.Register(bgtask.Builder{Name: "held", Trigger: trig, Task: newBlocker(), Conditions: []bgtask.Condition{never}})
	require.NoError(t, err)
	res, err := trig.Request(context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, bgtask.Allowed, res)
	reg.Unregister(false)
	synctest.Wait()
	recent := getState(t, hd).Recent
	require.Len(t, recent, 1)
	r := recent[0]
	assert.Empty(t, r.Started)
	assert.NotEmpty(t, r.Finished)
	assert.True(t, r.Canceled)
	assert.Equal(t, "Abort", r.Reason)
	assert.Equal(t, "bgtask: canceled: Abort", r.Error)
}

// A trigger value may serve several registrations, each with the settings it had when it
// was registered: the state describes each registration's trigger as registered, and never
// reads the value, which the program may change meanwhile.
func TestStateDescribesTheTriggerAsRegistered(t *testing.T) {
	h := newHost(t)
	trig := &bgtask.TimeTrigger{FreshnessTime: time.Hour}
	_, err := h.Register(bgtask.Builder{Name: "a", Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil }), Trigger: trig})
	require.NoError(t, err)
	hd := bgtaskhttp.New(h)
	done := make(chan struct{})
	go func() { // -race finds any read of the value
		defer close(done)
		trig.FreshnessTime = 2 * time.Hour // for the next registration
	}()
	st := getState(t, hd)
	<-done
	require.Len(t, st.Registrations, 1)
	assert.Equal(t, "TimeTrigger every 1h0m0s", st.Registrations[0].Trigger)
	assert.Equal(t, "TimeTrigger every 1h0m0s", getState(t, hd).Registrations[0].Trigger, "after the change too")
}

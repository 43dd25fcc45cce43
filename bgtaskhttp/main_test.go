package bgtaskhttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgtask-go/bgtask"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newHost returns a host that records deferral sites and logs nothing, shut down when the
// test ends.
func newHost(t testing.TB, opts ...bgtask.Option) *bgtask.Host {
	t.Helper()
	h, err := bgtask.NewHost(append([]bgtask.Option{bgtask.WithLogger(nil), bgtask.WithDeferralSites(true)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, h.Shutdown(context.Background())) })
	return h
}

// blocker is a task that reports on started once it runs, then holds its instance until
// it is canceled or release is closed.
type blocker struct {
	started chan bgtask.BackgroundTaskInstance
	release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{started: make(chan bgtask.BackgroundTaskInstance, 16), release: make(chan struct{})}
}

func (b *blocker) Run(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
	b.started <- inst
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-b.release:
		return nil
	}
}

// start registers task under name on an application trigger and requests it once,
// requiring the fire to be accepted.
func start(t testing.TB, h *bgtask.Host, name string, task bgtask.BackgroundTask) *bgtask.Registration {
	t.Helper()
	trig := bgtask.NewApplicationTrigger()
	reg, err := h.Register(bgtask.Builder{Name: name, Task: task, Trigger: trig})
	require.NoError(t, err)
	res, err := trig.Request(context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, bgtask.Allowed, res)
	return reg
}

// run registers a task that returns err under name, runs it once and waits for its
// completion.
func run(t testing.TB, h *bgtask.Host, name string, err error) *bgtask.Registration {
	t.Helper()
	trig := bgtask.NewApplicationTrigger()
	reg, rerr := h.Register(bgtask.Builder{Name: name, Trigger: trig,
		Task: bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return err })})
	require.NoError(t, rerr)
	_, res, rerr := trig.RequestAndWait(context.Background(), nil)
	require.NoError(t, rerr)
	require.Equal(t, bgtask.Allowed, res)
	return reg
}

// serve serves a request to hd directly and returns the recorded response.
func serve(hd http.Handler, method, target string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for k := 0; k+1 < len(header); k += 2 {
		r.Header.Set(header[k], header[k+1])
	}
	w := httptest.NewRecorder()
	hd.ServeHTTP(w, r)
	return w
}

// The JSON of the state, as a client would read it.

type stateJSON struct {
	Registrations []registrationJSON `json:"registrations"`
	Instances     []instanceJSON     `json:"instances"`
	Recent        []resultJSON       `json:"recent"`
}

type registrationJSON struct {
	TaskID     string      `json:"task_id"`
	Name       string      `json:"name"`
	Trigger    string      `json:"trigger"`
	Conditions []string    `json:"conditions"`
	Running    []string    `json:"running"`
	LastResult *resultJSON `json:"last_result"`
}

type instanceJSON struct {
	InstanceID     string         `json:"instance_id"`
	TaskID         string         `json:"task_id"`
	Name           string         `json:"name"`
	State          string         `json:"state"`
	Reason         string         `json:"reason"`
	Started        string         `json:"started"`
	Progress       uint32         `json:"progress"`
	SuspendedCount uint32         `json:"suspended_count"`
	Deferrals      []deferralJSON `json:"deferrals"`
}

type deferralJSON struct {
	Site  string `json:"site"`
	Taken string `json:"taken"`
	Go    bool   `json:"go"`
}

type resultJSON struct {
	InstanceID string `json:"instance_id"`
	TaskID     string `json:"task_id"`
	Name       string `json:"name"`
	Started    string `json:"started"`
	Finished   string `json:"finished"`
	Error      string `json:"error"`
	Canceled   bool   `json:"canceled"`
	Reason     string `json:"reason"`
	Progress   uint32 `json:"progress"`
}

// decodeState decodes body, requiring it to hold no field that stateJSON lacks.
func decodeState(t testing.TB, body []byte) stateJSON {
	t.Helper()
	var st stateJSON
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&st), "%s", body)
	return st
}

// getState serves GET /api/state and decodes it.
func getState(t testing.TB, hd http.Handler) stateJSON {
	t.Helper()
	w := serve(hd, http.MethodGet, "/api/state")
	require.Equal(t, http.StatusOK, w.Code)
	return decodeState(t, w.Body.Bytes())
}

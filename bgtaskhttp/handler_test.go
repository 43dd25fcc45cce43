package bgtaskhttp_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskhttp"
)

func TestRoutesAndMethods(t *testing.T) {
	hd := bgtaskhttp.New(newHost(t), bgtaskhttp.AllowCancel())
	const unknown = "/api/instances/00000000-0000-0000-0000-000000000001/cancel"
	for _, tc := range []struct {
		method, target string
		code           int
		contentType    string
	}{
		{http.MethodGet, "/", http.StatusOK, "text/html; charset=utf-8"},
		{http.MethodHead, "/", http.StatusOK, "text/html; charset=utf-8"},
		{http.MethodGet, "/api/state", http.StatusOK, "application/json"},
		{http.MethodHead, "/api/events", http.StatusOK, "text/event-stream"},
		{http.MethodPost, unknown, http.StatusNotFound, ""},
		{http.MethodPost, "/api/instances/not-an-id/cancel", http.StatusNotFound, ""},
		{http.MethodPost, "/", http.StatusMethodNotAllowed, ""},
		{http.MethodDelete, "/", http.StatusMethodNotAllowed, ""},
		{http.MethodPut, "/api/state", http.StatusMethodNotAllowed, ""},
		{http.MethodPost, "/api/events", http.StatusMethodNotAllowed, ""},
		{http.MethodGet, unknown, http.StatusMethodNotAllowed, ""},
		{http.MethodDelete, unknown, http.StatusMethodNotAllowed, ""},
		{http.MethodGet, "/index.html", http.StatusNotFound, ""},
		{http.MethodGet, "/api/", http.StatusNotFound, ""},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			w := serve(hd, tc.method, tc.target)
			assert.Equal(t, tc.code, w.Code)
			if tc.contentType != "" {
				assert.Equal(t, tc.contentType, w.Header().Get("Content-Type"))
			}
			if tc.code == http.StatusMethodNotAllowed {
				assert.NotEmpty(t, w.Header().Get("Allow"))
			}
		})
	}
}

// TestMountedLikePprof serves the handler under a prefix, over the network, as the
// package doc mounts it.
func TestMountedLikePprof(t *testing.T) {
	h := newHost(t)
	run(t, h, "sync", nil)
	mux := http.NewServeMux()
	mux.Handle("/debug/bgtask/", http.StripPrefix("/debug/bgtask", bgtaskhttp.New(h)))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for path, want := range map[string]string{
		"/debug/bgtask/":          "<!doctype html>",
		"/debug/bgtask/api/state": `"name":"sync"`,
	} {
		res, err := srv.Client().Get(srv.URL + path)
		require.NoError(t, err)
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		assert.Equal(t, http.StatusOK, res.StatusCode, path)
		assert.Contains(t, string(body), want, path)
	}
}

func TestCancel(t *testing.T) {
	h := newHost(t)
	hd := bgtaskhttp.New(h, bgtaskhttp.AllowCancel())
	started, release := make(chan bgtask.BackgroundTaskInstance, 1), make(chan struct{})
	reg := start(t, h, "slow to stop", bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		started <- inst
		<-ctx.Done()
		<-release
		return context.Cause(ctx)
	}))
	done := make(chan bgtask.CompletedEventArgs, 1)
	reg.OnCompleted(func(e bgtask.CompletedEventArgs) { done <- e })
	inst := <-started
	target := "/api/instances/" + inst.InstanceID().String() + "/cancel"

	assert.Equal(t, http.StatusNoContent, serve(hd, http.MethodPost, target).Code)
	assert.Equal(t, bgtask.Abort, context.Cause(inst.Context()).(*bgtask.CanceledError).Reason)
	// Canceling and not yet ended: a second cancel is answered as the first (the id in
	// upper case names the same instance).
	id := inst.InstanceID().String()
	again := strings.Replace(target, id, strings.ToUpper(id), 1)
	assert.Equal(t, http.StatusNoContent, serve(hd, http.MethodPost, again).Code)

	close(release)
	e := <-done
	assert.True(t, e.Canceled)
	assert.Equal(t, bgtask.Abort, e.Reason)
	assert.Equal(t, http.StatusNotFound, serve(hd, http.MethodPost, target).Code, "finished")
}

func TestCancelForbidden(t *testing.T) {
	h := newHost(t)
	task := newBlocker()
	start(t, h, "long", task)
	inst := <-task.started
	defer close(task.release)
	target := "/api/instances/" + inst.InstanceID().String() + "/cancel"

	for _, tc := range []struct {
		name   string
		opts   []bgtaskhttp.Option
		header []string
	}{
		{"without AllowCancel", nil, nil},
		{"without AllowCancel, same origin", nil, []string{"Sec-Fetch-Site", "same-origin"}},
		{"cross-site", []bgtaskhttp.Option{bgtaskhttp.AllowCancel()}, []string{"Sec-Fetch-Site", "cross-site"}},
		{"same-site", []bgtaskhttp.Option{bgtaskhttp.AllowCancel()}, []string{"Sec-Fetch-Site", "same-site"}},
		{"foreign Origin", []bgtaskhttp.Option{bgtaskhttp.AllowCancel()}, []string{"Origin", "https://evil.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := serve(bgtaskhttp.New(h, tc.opts...), http.MethodPost, target, tc.header...)
			assert.Equal(t, http.StatusForbidden, w.Code)
		})
	}
	assert.Equal(t, bgtask.InstanceRunning, h.Instances()[0].State, "nothing canceled it")
}

// TestCancelSameOrigin is the page's own request, as a browser sends it: allowed.
func TestCancelSameOrigin(t *testing.T) {
	h := newHost(t)
	task := newBlocker()
	start(t, h, "long", task)
	inst := <-task.started
	target := "/api/instances/" + inst.InstanceID().String() + "/cancel"
	r := httptest.NewRequest(http.MethodPost, "http://localhost:8080"+target, nil)
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	r.Header.Set("Origin", "http://localhost:8080")
	w := httptest.NewRecorder()
	bgtaskhttp.New(h, bgtaskhttp.AllowCancel()).ServeHTTP(w, r)
	assert.Equal(t, http.StatusNoContent, w.Code)
}

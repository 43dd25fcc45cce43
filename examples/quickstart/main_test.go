package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgtask-go/bgtask"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBar(t *testing.T) {
	assert.Equal(t, "[..........]   0%", bar(0))
	assert.Equal(t, "[####......]  45%", bar(45))
	assert.Equal(t, "[##########] 100%", bar(100))
}

func TestResult(t *testing.T) {
	for _, tc := range []struct {
		e    bgtask.CompletedEventArgs
		want string
	}{
		{bgtask.CompletedEventArgs{}, "ok"},
		{bgtask.CompletedEventArgs{Err: errors.New("x")}, "error: x"},
		{bgtask.CompletedEventArgs{Err: &bgtask.PanicError{Value: "v"}}, "panic recovered: v"},
		{bgtask.CompletedEventArgs{Canceled: true, Reason: bgtask.Abort}, "canceled (Abort)"},
	} {
		assert.Equal(t, tc.want, result(tc.e))
	}
}

// TestListen serves the live page of a host, reads it, its state and the start of its
// event stream, and shuts the server down: the stream under way does not hold it.
func TestListen(t *testing.T) {
	host, err := bgtask.NewHost(bgtask.WithLogger(nil))
	require.NoError(t, err)
	defer func() { assert.NoError(t, host.Shutdown(context.Background())) }()
	_, err = host.Register(bgtask.Builder{Name: "download", Trigger: bgtask.NewApplicationTrigger(), Task: bgtask.TaskFunc(download)})
	require.NoError(t, err)

	url, stop, err := listen(host, "127.0.0.1:0")
	require.NoError(t, err)
	assert.Regexp(t, `^http://127\.0\.0\.1:\d+/debug/bgtask/$`, url)
	for path, want := range map[string]string{"": "<!doctype html>", "api/state": `"name":"download"`} {
		res, err := http.Get(url + path)
		require.NoError(t, err)
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		assert.Equal(t, http.StatusOK, res.StatusCode)
		assert.Contains(t, string(body), want)
	}

	res, err := http.Get(url + "api/events")
	require.NoError(t, err)
	defer res.Body.Close()
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(line, `data: {"registrations":[`), line)
	assert.NoError(t, stop())
	http.DefaultClient.CloseIdleConnections()
}

package bgtaskhttp_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskhttp"
)

// streamWriter is a ResponseWriter that flushes, for serving GET /api/events inside a
// synctest bubble, where a real server cannot run (its network I/O would stop the fake
// clock). Each message flushed is kept with the time it was flushed.
type streamWriter struct {
	header http.Header
	mu     sync.Mutex
	code   int
	buf    bytes.Buffer // written, not yet flushed
	msgs   []message
}

type message struct {
	at   time.Time
	data string
}

func newStreamWriter() *streamWriter { return &streamWriter{header: http.Header{}} }

func (w *streamWriter) Header() http.Header { return w.header }

func (w *streamWriter) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.code == 0 {
		w.code = code
	}
}

func (w *streamWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// Flush keeps each complete message written, and requires it to be one data line.
func (w *streamWriter) Flush() {
	w.WriteHeader(http.StatusOK)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		msg, rest, ok := strings.Cut(w.buf.String(), "\n\n")
		if !ok {
			return
		}
		w.buf.Reset()
		w.buf.WriteString(rest)
		w.msgs = append(w.msgs, message{at: time.Now(), data: msg})
	}
}

// messages returns the messages flushed so far.
func (w *streamWriter) messages() []message {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]message(nil), w.msgs...)
}

// openStream serves GET /api/events on a goroutine of its own until the test ends, when
// the request's context is canceled and the handler must return.
func openStream(t *testing.T, hd http.Handler) *streamWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := newStreamWriter()
	done := make(chan struct{})
	go func() {
		defer close(done)
		hd.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/events", nil))
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return w
}

// stateOf decodes a message's state.
func stateOf(t *testing.T, m message) stateJSON {
	t.Helper()
	data, ok := strings.CutPrefix(m.data, "data: ")
	require.True(t, ok, "%q", m.data)
	require.NotContains(t, data, "\n")
	return decodeState(t, []byte(data))
}

func TestEventsSendTheStateWhenItChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		w := openStream(t, bgtaskhttp.New(h))
		synctest.Wait()
		assert.Equal(t, "text/event-stream", w.Header().Get("Content-Type"))
		msgs := w.messages()
		require.Len(t, msgs, 1, "the state, at once")
		assert.Empty(t, stateOf(t, msgs[0]).Registrations)

		_, err := h.Register(bgtask.Builder{Name: "new", Trigger: bgtask.NewApplicationTrigger(), Task: newBlocker()})
		require.NoError(t, err)
		time.Sleep(time.Second / 4)
		synctest.Wait()
		msgs = w.messages()
		require.Len(t, msgs, 2)
		assert.Equal(t, "new", stateOf(t, msgs[1]).Registrations[0].Name)

		time.Sleep(time.Minute) // nothing changes, nothing runs: nothing is sent
		synctest.Wait()
		assert.Len(t, w.messages(), 2)
	})
}

// An Ensure that changes a registration in place changes the state: the stream sends it.
func TestEventsSendARegistrationThatEnsureChanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		b := bgtask.Builder{Name: "n", Task: newBlocker(), Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}}
		_, err := h.Ensure(b)
		require.NoError(t, err)
		w := openStream(t, bgtaskhttp.New(h))
		synctest.Wait()
		require.Len(t, w.messages(), 1)

		b.Trigger = &bgtask.TimeTrigger{FreshnessTime: 2 * time.Hour}
		_, err = h.Ensure(b)
		require.NoError(t, err)
		time.Sleep(time.Second / 4)
		synctest.Wait()
		msgs := w.messages()
		require.Len(t, msgs, 2)
		assert.Equal(t, "TimeTrigger every 2h0m0s", stateOf(t, msgs[1]).Registrations[0].Trigger)
	})
}

func TestEventsAtMostFourASecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		w := openStream(t, bgtaskhttp.New(h))
		begin := time.Now()
		for time.Since(begin) < 3*time.Second { // a change every 10ms
			run(t, h, "quick", nil)
			time.Sleep(10 * time.Millisecond)
		}
		synctest.Wait()
		msgs := w.messages()
		assert.GreaterOrEqual(t, len(msgs), 12, "a change every 10ms for 3s: a message every 250ms")
		for k := 1; k < len(msgs); k++ {
			assert.GreaterOrEqual(t, msgs[k].at.Sub(msgs[k-1].at), time.Second/4, "message %d", k)
			assert.NotEqual(t, msgs[k].data, msgs[k-1].data)
		}
	})
}

// TestEventsFollowProgress: progress raises no event of the host, yet the stream sends
// it while the instance runs, and sends nothing while it does not change.
func TestEventsFollowProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		w := openStream(t, bgtaskhttp.New(h))
		task := newBlocker()
		start(t, h, "long", task)
		inst := <-task.started
		time.Sleep(time.Second)
		synctest.Wait()
		sent := len(w.messages())

		inst.SetProgress(70)
		time.Sleep(time.Second / 4)
		synctest.Wait()
		msgs := w.messages()
		require.Len(t, msgs, sent+1)
		assert.Equal(t, uint32(70), stateOf(t, msgs[sent]).Instances[0].Progress)

		time.Sleep(5 * time.Second)
		synctest.Wait()
		assert.Len(t, w.messages(), sent+1, "no change, no message")
		close(task.release)
	})
}

// TestEventsEndWhenTheClientGoes: the handler returns once the request's context ends
// (openStream's cleanup waits for it), and its subscription is stopped: changes after
// that reach nothing.
func TestEventsEndWhenTheClientGoes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		hd := bgtaskhttp.New(h)
		ctx, cancel := context.WithCancel(context.Background())
		w := newStreamWriter()
		done := make(chan struct{})
		go func() {
			defer close(done)
			hd.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/events", nil))
		}()
		synctest.Wait()
		cancel()
		<-done
		run(t, h, "after", nil)
		synctest.Wait()
		assert.Len(t, w.messages(), 1)
	})
}

func TestEventsNeedAFlushingWriter(t *testing.T) {
	rec := httptest.NewRecorder()
	w := struct{ http.ResponseWriter }{rec} // without the recorder's Flush
	bgtaskhttp.New(newHost(t)).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/events", nil))
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
}

// readMessage reads one message of an event stream.
func readMessage(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	blank, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "\n", blank)
	return strings.TrimSuffix(line, "\n")
}

// TestEventsEndAtServerShutdown: http.Server.Shutdown waits for requests under way; the
// stream ends as it begins, so Shutdown returns at once.
func TestEventsEndAtServerShutdown(t *testing.T) {
	h := newHost(t)
	srv := httptest.NewServer(bgtaskhttp.New(h))
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL + "/api/events")
	require.NoError(t, err)
	defer res.Body.Close()
	assert.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	body := bufio.NewReader(res.Body)
	stateOf(t, message{data: readMessage(t, body)})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, srv.Config.Shutdown(ctx))
	_, err = body.ReadString('\n')
	assert.Error(t, err, "the stream ended")
}

// A stream that reaches the handler after its server's Shutdown began (held by a
// middleware, say) ends at once, as the streams open then did: Shutdown does not wait for
// it. Shutdown called again, as a program that retries it may, is harmless.
func TestEventsStartedDuringServerShutdownEnd(t *testing.T) {
	hd := bgtaskhttp.New(newHost(t))
	entered, proceed := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("held") {
			close(entered)
			<-proceed
		}
		hd.ServeHTTP(w, r)
	}))
	defer srv.Close()
	first, err := srv.Client().Get(srv.URL + "/api/events")
	require.NoError(t, err)
	defer first.Body.Close()
	body := bufio.NewReader(first.Body)
	readMessage(t, body)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	held := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/events?held", nil)
		if err == nil {
			var res *http.Response
			if res, err = srv.Client().Do(req); err == nil {
				_, err = io.Copy(io.Discard, res.Body) // until the stream ends
				res.Body.Close()
			}
		}
		held <- err
	}()
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- srv.Config.Shutdown(ctx) }()
	_, err = io.Copy(io.Discard, body)
	require.NoError(t, err, "the first stream ended: the Shutdown began")
	close(proceed)
	require.NoError(t, <-shut, "Shutdown waited for the stream that started meanwhile")
	require.NoError(t, <-held)
	require.NoError(t, srv.Config.Shutdown(ctx), "again")
}

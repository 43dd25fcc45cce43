package bgtask_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgtask-go/bgtask"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture is a host with one registration on an application trigger, whose Completed
// events arrive on done.
type fixture struct {
	host *bgtask.Host
	reg  *bgtask.Registration
	trig *bgtask.ApplicationTrigger
	done chan bgtask.CompletedEventArgs
	log  *syncBuffer
}

func newFixture(t *testing.T, task bgtask.TaskFunc, opts ...bgtask.Option) *fixture {
	t.Helper()
	f := &fixture{trig: bgtask.NewApplicationTrigger(), done: make(chan bgtask.CompletedEventArgs, 64), log: new(syncBuffer)}
	opts = append([]bgtask.Option{bgtask.WithLogger(slog.New(slog.NewTextHandler(f.log, nil)))}, opts...)
	h, err := bgtask.NewHost(opts...)
	require.NoError(t, err)
	f.host = h
	f.reg, err = h.Register(bgtask.Builder{Name: "task", Task: task, Trigger: f.trig})
	require.NoError(t, err)
	f.reg.OnCompleted(func(e bgtask.CompletedEventArgs) { f.done <- e })
	return f
}

// request fires the trigger and requires it to be accepted.
func (f *fixture) request(t *testing.T, args map[string]any) {
	t.Helper()
	res, err := f.trig.Request(context.Background(), args)
	require.NoError(t, err)
	require.Equal(t, bgtask.Allowed, res)
}

// shutdown shuts the host down and requires a clean end.
func (f *fixture) shutdown(t *testing.T) {
	t.Helper()
	require.NoError(t, f.host.Shutdown(context.Background()))
}

// pending reports whether a Completed event is waiting; call it after synctest.Wait.
func (f *fixture) pending() bool { return len(f.done) > 0 }

// started returns a task that sends its instance on ch and then runs body.
func started(ch chan<- bgtask.BackgroundTaskInstance, body bgtask.TaskFunc) bgtask.TaskFunc {
	return func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		ch <- inst
		if body == nil {
			return nil
		}
		return body(ctx, inst)
	}
}

// syncBuffer is a bytes.Buffer safe for the library's goroutines to log into.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// slogTo returns a logger that writes text records into b.
func slogTo(b *syncBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// newHost returns a host made with opts, failing the test if NewHost fails.
func newHost(t *testing.T, opts ...bgtask.Option) *bgtask.Host {
	t.Helper()
	h, err := bgtask.NewHost(opts...)
	require.NoError(t, err)
	return h
}

// mustRegister registers b on h, failing the test if Register fails.
func mustRegister(t *testing.T, h *bgtask.Host, b bgtask.Builder) *bgtask.Registration {
	t.Helper()
	r, err := h.Register(b)
	require.NoError(t, err)
	return r
}

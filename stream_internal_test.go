package bgtask

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// slowLog is a log whose record of an instance's cancellation takes until release is
// closed: a log that writes to a slow disk, made deterministic.
type slowLog struct{ release chan struct{} }

func (l slowLog) Enabled(context.Context, slog.Level) bool { return true }
func (l slowLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l slowLog) WithGroup(string) slog.Handler            { return l }
func (l slowLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "bgtask: instance canceled" {
		<-l.release
	}
	return nil
}

// The EventCanceled of a cancel by a timer (here MaxExecutionTime) is logged on the
// timer's goroutine, which the library does not count as its own: Shutdown still waits
// for the log.
func TestShutdownWaitsForTheLogOfACancelByATimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		h, err := NewHost(WithLogger(slog.New(slowLog{release})))
		require.NoError(t, err)
		trig := NewApplicationTrigger()
		_, err = h.Register(Builder{Name: "r", Trigger: trig, MaxExecutionTime: time.Second,
			Task: TaskFunc(func(ctx context.Context, _ BackgroundTaskInstance) error { <-ctx.Done(); return nil })})
		require.NoError(t, err)
		_, res, err := trig.RequestAndWait(t.Context(), nil) // returns when the limit canceled it
		require.NoError(t, err)
		require.Equal(t, Allowed, res)
		returned := make(chan error, 1)
		go func() { returned <- h.Shutdown(context.Background()) }()
		synctest.Wait()
		select {
		case <-returned:
			assert.Fail(t, "Shutdown returned before the Canceled event was logged")
		default:
		}
		close(release)
		require.NoError(t, <-returned)
	})
}

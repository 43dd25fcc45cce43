package bgtasktest

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/bgtask-go/bgtask"
	"github.com/google/uuid"
)

// terminatedMessage says what a terminated instance left, one line for each deferral, so
// that the test's author finds the leak: err is the Completed event's Err.
func terminatedMessage(err error) string {
	var te *bgtask.TerminatedError
	if !errors.As(err, &te) {
		return "bgtasktest: the instance was terminated: " + err.Error()
	}
	var b strings.Builder
	b.WriteString("bgtasktest: the instance was terminated: ")
	if te.Canceled != nil {
		fmt.Fprintf(&b, "canceled with %v, ", te.Canceled.Reason)
	}
	b.WriteString("it did not finish within its grace period")
	if te.RunReturned {
		b.WriteString("\n\tRun had returned")
	} else {
		b.WriteString("\n\tRun had not returned")
	}
	fmt.Fprintf(&b, "; left: %d deferral(s), %d Go func(s) running", te.Deferrals, te.GoRunning)
	for _, d := range te.Outstanding {
		if d.Go {
			fmt.Fprintf(&b, "\n\tGo func still running, started at %s", site(d))
		} else {
			fmt.Fprintf(&b, "\n\tdeferral not completed, taken at %s", site(d))
		}
	}
	if te.Err != nil {
		fmt.Fprintf(&b, "\n\tearlier error: %v", te.Err)
	}
	return b.String()
}

// site returns where d was taken.
func site(d bgtask.DeferralInfo) string {
	if d.Site == "" {
		return "an unknown site"
	}
	return d.Site
}

// onlyLeft reports whether err, from Shutdown, says no more than that the instance id,
// terminated and already reported, still has goroutines running.
func onlyLeft(err error, id uuid.UUID) bool {
	var se *bgtask.ShutdownError
	if !errors.As(err, &se) || len(se.Stuck) > 0 {
		return false
	}
	for _, in := range se.Instances {
		if in.InstanceID != id {
			return false
		}
	}
	return true
}

// testLog writes the host's log to t.Log while Run runs, and drops it after: t.Log after
// the test has ended panics, and a terminated instance's goroutines may make the host log
// later. Each Write holds the read lock, so that close waits for a Write under way.
type testLog struct {
	t      testing.TB
	mu     sync.RWMutex
	closed bool
}

// logger returns a logger that writes text records, without their time, to l.
func (l *testLog) logger() *slog.Logger {
	noTime := func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{ReplaceAttr: noTime}))
}

// Write logs p with t.Log, unless Run has returned.
func (l *testLog) Write(p []byte) (int, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if !l.closed {
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// close drops what is written from now on.
func (l *testLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

package bgtasktest

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"

	"github.com/bgtask-go/bgtask"
)

func TestTerminatedMessage(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"zero", &bgtask.TerminatedError{},
			"bgtasktest: the instance was terminated: it did not finish within its grace period\n" +
				"\tRun had not returned; left: 0 deferral(s), 0 Go func(s) running"},
		{"unknown site", &bgtask.TerminatedError{RunReturned: true, Deferrals: 1, Outstanding: []bgtask.DeferralInfo{{}}},
			"bgtasktest: the instance was terminated: it did not finish within its grace period\n" +
				"\tRun had returned; left: 1 deferral(s), 0 Go func(s) running\n" +
				"\tdeferral not completed, taken at an unknown site"},
		{"wrapped", fmt.Errorf("sync: %w", &bgtask.TerminatedError{
			Canceled: &bgtask.CanceledError{Reason: bgtask.Terminating}, Deferrals: 1, GoRunning: 1,
			Outstanding: []bgtask.DeferralInfo{{Site: "sync.go:7", Go: true}}, Err: context.DeadlineExceeded}),
			"bgtasktest: the instance was terminated: canceled with Terminating, it did not finish within its grace period\n" +
				"\tRun had not returned; left: 1 deferral(s), 1 Go func(s) running\n" +
				"\tGo func still running, started at sync.go:7\n" +
				"\tearlier error: context deadline exceeded"},
		{"another error", fmt.Errorf("odd: %w", bgtask.ErrTerminated),
			"bgtasktest: the instance was terminated: odd: bgtask: terminated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, terminatedMessage(c.err))
		})
	}
}

func TestOnlyLeft(t *testing.T) {
	id := uuid.New()
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"the instance", &bgtask.ShutdownError{Err: context.DeadlineExceeded, Instances: []bgtask.InstanceInfo{{InstanceID: id}}}, true},
		{"wrapped", errors.Join(&bgtask.ShutdownError{Instances: []bgtask.InstanceInfo{{InstanceID: id}}}), true},
		{"another instance", &bgtask.ShutdownError{Instances: []bgtask.InstanceInfo{{InstanceID: id}, {InstanceID: uuid.New()}}}, false},
		{"a stuck goroutine", &bgtask.ShutdownError{Stuck: []string{"OnCompleted handler"}}, false},
		{"another error", errors.New("store down"), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, onlyLeft(c.err, id))
		})
	}
}

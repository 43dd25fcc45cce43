package main

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
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

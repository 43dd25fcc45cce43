package bgtaskriver

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bgtask-go/bgtask"
	"github.com/stretchr/testify/assert"
)

// Every cancellation reason survives the job's output, those outside the enumeration,
// which Host.Cancel takes too, included.
func TestRecordKeepsEveryReason(t *testing.T) {
	for _, r := range []bgtask.CancellationReason{bgtask.Abort, bgtask.Terminating, bgtask.IdleTask,
		bgtask.ExecutionTimeExceeded, bgtask.ResourceRevocation, bgtask.EnergySaver, 12, 42, -1} {
		rec := recordOf(bgtask.CompletedEventArgs{Canceled: true, Reason: r, Err: &bgtask.CanceledError{Reason: r}})
		assert.Equal(t, r, rec.result().Reason, "%v", r)
	}
	assert.Equal(t, bgtask.Abort, reasonNamed("Unknown"), "another name")
	assert.Equal(t, bgtask.Abort, reasonNamed("CancellationReason(x)"))
}

// An error text too long for a job's output is cut, at a rune's start, rather than lost
// with the output that River would refuse.
func TestRecordClipsALongError(t *testing.T) {
	long := strings.Repeat("é", maxErrorText) // two bytes each
	rec := recordOf(bgtask.CompletedEventArgs{Err: errors.New(long)})
	assert.Less(t, len(rec.Error), maxErrorText+32)
	assert.True(t, utf8.ValidString(rec.Error))
	assert.True(t, strings.HasPrefix(long, strings.TrimSuffix(rec.Error, fmt.Sprintf("… (%d bytes more)", len(long)-maxErrorText))))
	assert.Equal(t, "short", recordOf(bgtask.CompletedEventArgs{Err: errors.New("short")}).Error)
}

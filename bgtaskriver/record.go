package bgtaskriver

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bgtask-go/bgtask"
	"github.com/google/uuid"
	"github.com/riverqueue/river/rivertype"
)

// record is what the fleet writes in a job's output (River's RecordOutput and JobUpdate),
// for every replica to read: the progress of the running instance, written while it runs
// (see progress.go), then its result, written when the job ends (Finished set).
type record struct {
	Instance uuid.UUID `json:"instance"`
	Progress uint32    `json:"progress,omitempty"`
	// The result, once the instance ended.
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	Canceled bool       `json:"canceled,omitempty"`
	Reason   string     `json:"reason,omitempty"` // the CancellationReason's name, when Canceled
	Error    string     `json:"error,omitempty"`
	Is       []string   `json:"is,omitempty"` // the sentinels that Error matched (see sentinels)
	// Superseded marks the job of a time fire that a later time's job made one too many:
	// it ended without running (see Fleet.timeFire).
	Superseded bool `json:"superseded,omitempty"`
}

// sentinels are the errors that a result read back from a job still matches, by name, as
// a result the core restores from its store does.
var sentinels = map[string]error{
	"canceled":            bgtask.ErrCanceled,
	"terminated":          bgtask.ErrTerminated,
	"unknown_entry_point": bgtask.ErrUnknownEntryPoint,
}

// recordOf returns the record of an instance's result.
func recordOf(out bgtask.CompletedEventArgs) record {
	rec := record{Instance: out.InstanceID, Progress: out.Progress, Canceled: out.Canceled, Finished: &out.Finished}
	if !out.Started.IsZero() {
		rec.Started = &out.Started
	}
	if out.Canceled {
		rec.Reason = out.Reason.String()
	}
	if out.Err != nil {
		rec.Error = clip(out.Err.Error())
		for name, err := range sentinels {
			if errors.Is(out.Err, err) {
				rec.Is = append(rec.Is, name)
			}
		}
		slices.Sort(rec.Is)
	}
	return rec
}

// maxErrorText bounds the text of an error in a record. River refuses an output beyond
// 32 MiB, and the job would then end with no output: a failure read as a success.
const maxErrorText = 64 << 10

// clip returns text cut to at most maxErrorText bytes, at a rune's start, saying how
// much was cut.
func clip(text string) string {
	if len(text) <= maxErrorText {
		return text
	}
	n := maxErrorText
	for n > 0 && !utf8.RuneStart(text[n]) {
		n--
	}
	return text[:n] + "… (" + strconv.Itoa(len(text)-n) + " bytes more)"
}

// result returns the result rec holds; rec.Finished must be set.
func (rec *record) result() bgtask.CompletedEventArgs {
	out := bgtask.CompletedEventArgs{
		InstanceID: rec.Instance,
		Canceled:   rec.Canceled,
		Reason:     reasonNamed(rec.Reason),
		Progress:   rec.Progress,
		Finished:   *rec.Finished,
	}
	if rec.Started != nil {
		out.Started = *rec.Started
	}
	if rec.Error != "" {
		e := &recordedError{text: rec.Error}
		for _, name := range rec.Is {
			if err := sentinels[name]; err != nil {
				e.is = append(e.is, err)
			}
		}
		out.Err = e
	}
	return out
}

// reasonNamed returns the CancellationReason whose String is name: a reason's name, such
// as "Terminating", or "CancellationReason(N)" for a value outside the enumeration, which
// Host.Cancel takes too. It returns Abort for another name.
func reasonNamed(name string) bgtask.CancellationReason {
	if n, ok := strings.CutPrefix(name, "CancellationReason("); ok {
		if v, err := strconv.Atoi(strings.TrimSuffix(n, ")")); err == nil {
			return bgtask.CancellationReason(v)
		}
	}
	for r := bgtask.CancellationReason(0); !strings.HasPrefix(r.String(), "CancellationReason("); r++ {
		if r.String() == name {
			return r
		}
	}
	return bgtask.Abort
}

// recordedError is an instance's error read back from its job: its text, and the
// sentinels it matched.
type recordedError struct {
	text string
	is   []error
}

func (e *recordedError) Error() string        { return e.text }
func (e *recordedError) Is(target error) bool { return slices.Contains(e.is, target) }

// droppedRecord is the record of a fire that no replica can run: its registration is
// gone. It is dropped, as a held fire is by Unregister: canceled with Abort, never
// started.
func droppedRecord() record {
	now := time.Now()
	return recordOf(bgtask.CompletedEventArgs{
		Err:      &bgtask.CanceledError{Reason: bgtask.Abort},
		Canceled: true,
		Reason:   bgtask.Abort,
		Finished: now,
	})
}

// resultOfRow returns the result of the finished job row, with rec its output, if any.
// A job completed without a result recorded is a plain success (see Fleet.end): its
// instance is the last fetch's, Started is when River fetched it (AttemptedAt, just
// before Run) and Finished when River wrote its end (FinalizedAt, just after), both within
// milliseconds of the Completed event's. A job that ended otherwise without a result
// recorded did not run its fire to the end: cancelled (by Fleet.Cancel while it was
// queued), it is a fire dropped before it started, with Abort; discarded (rescued from
// crashed replicas too often), a failure with River's last error.
func resultOfRow(row *rivertype.JobRow, rec *record) bgtask.CompletedEventArgs {
	if rec != nil && rec.Finished != nil {
		return rec.result()
	}
	out := bgtask.CompletedEventArgs{}
	if row.FinalizedAt != nil {
		out.Finished = *row.FinalizedAt
	}
	switch row.State {
	case rivertype.JobStateCompleted:
		out.InstanceID = currentInstance(row)
		if row.AttemptedAt != nil {
			out.Started = *row.AttemptedAt
		}
	case rivertype.JobStateCancelled:
		out.Canceled, out.Reason, out.Err = true, bgtask.Abort, &bgtask.CanceledError{Reason: bgtask.Abort}
	case rivertype.JobStateDiscarded:
		text := "bgtaskriver: job discarded by River"
		if n := len(row.Errors); n > 0 {
			text += ": " + row.Errors[n-1].Error
		}
		out.Err = errors.New(text)
	}
	return out
}

package bgtask

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// A persistent registration is stored as one record: JSON with a version, so that a
// record of another version is refused rather than misread. Times are wall-clock Unix
// nanoseconds, so that they keep their meaning across restarts.

// recordVersion is the version of the records this package writes and reads.
const recordVersion = 1

// maxNext is the latest next time a record may hold (in 2116): far enough for any period,
// near enough that the host's clock arithmetic cannot overflow.
const maxNext = 1 << 62

type record struct {
	Version               int                   `json:"version"`
	Name                  string                `json:"name"`
	EntryPoint            string                `json:"entry_point"`
	Trigger               triggerRecord         `json:"trigger"`
	Conditions            []SystemConditionType `json:"conditions,omitempty"`
	CancelOnConditionLoss bool                  `json:"cancel_on_condition_loss,omitempty"`
	MaxExecutionTime      time.Duration         `json:"max_execution_time,omitempty"`
	Next                  int64                 `json:"next,omitempty"` // a time trigger's earliest slot not fired
	Last                  *resultRecord         `json:"last,omitempty"`
}

type triggerRecord struct {
	Kind    string            `json:"kind"` // "application", "time" or "system"
	OneShot bool              `json:"one_shot,omitempty"`
	Period  time.Duration     `json:"period,omitempty"`
	System  SystemTriggerType `json:"system,omitempty"`
}

type resultRecord struct {
	InstanceID uuid.UUID          `json:"instance_id"`
	Err        string             `json:"err,omitempty"`
	Is         []string           `json:"is,omitempty"` // the sentinels Err matched
	Canceled   bool               `json:"canceled,omitempty"`
	Reason     CancellationReason `json:"reason,omitempty"`
	Progress   uint32             `json:"progress,omitempty"`
	Started    int64              `json:"started,omitempty"`
	Finished   int64              `json:"finished,omitempty"`
}

var kindNames = map[triggerKind]string{applicationKind: "application", timeKind: "time", systemKind: "system"}

// storedSentinels are the errors a stored result still matches after a restart.
var storedSentinels = map[string]error{
	"canceled":            ErrCanceled,
	"terminated":          ErrTerminated,
	"unknown_entry_point": ErrUnknownEntryPoint,
}

// encodeRecord encodes r's record. The caller holds the host's lock.
func (r *Registration) encodeRecordLocked() []byte {
	rec := record{
		Version:               recordVersion,
		Name:                  r.name,
		EntryPoint:            r.entryPoint,
		Trigger:               triggerRecord{Kind: kindNames[r.kind], OneShot: r.oneShot, Period: time.Duration(r.sched.period), System: r.sysType},
		CancelOnConditionLoss: r.cancelOnLoss,
		MaxExecutionTime:      r.maxExec,
		Last:                  resultOf(r.last),
	}
	for _, c := range r.conditions {
		rec.Conditions = append(rec.Conditions, c.(SystemCondition).Type)
	}
	if r.kind == timeKind {
		epoch := r.host.epoch.UnixNano()
		rec.Next = maxNext // a period too long to add: as good as never
		if r.sched.next < maxNext-epoch {
			rec.Next = epoch + r.sched.next
		}
	}
	b, _ := json.Marshal(rec) // cannot fail: no value of these types fails to encode
	return b
}

func resultOf(e *CompletedEventArgs) *resultRecord {
	if e == nil {
		return nil
	}
	res := &resultRecord{InstanceID: e.InstanceID, Canceled: e.Canceled, Reason: e.Reason,
		Progress: e.Progress, Started: unixNano(e.Started), Finished: unixNano(e.Finished)}
	if e.Err != nil {
		res.Err = e.Err.Error()
		for name, sentinel := range storedSentinels {
			if errors.Is(e.Err, sentinel) {
				res.Is = append(res.Is, name)
			}
		}
		slices.Sort(res.Is)
	}
	return res
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func timeOf(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// decodeRecord decodes and checks the record of id. Its errors match ErrStoreCorrupt and
// say which record and what is wrong.
func decodeRecord(id uuid.UUID, b []byte) (*record, error) {
	subject := "record " + id.String()
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, errorf(ErrStoreCorrupt, subject, err.Error())
	}
	problem := ""
	switch {
	case rec.Version != recordVersion:
		problem = fmt.Sprintf("record version %d, this package reads version %d", rec.Version, recordVersion)
	case rec.Name == "" || rec.EntryPoint == "":
		problem = "no name or no entry point"
	case rec.Trigger.Kind == "time" && rec.Trigger.Period <= 0:
		problem = fmt.Sprintf("time trigger period %v", rec.Trigger.Period)
	case rec.Trigger.Kind == "system" && !rec.Trigger.System.valid():
		problem = fmt.Sprintf("unknown system trigger type %d", rec.Trigger.System)
	case rec.Trigger.Kind != "time" && rec.Trigger.Kind != "system" && rec.Trigger.Kind != "application":
		problem = fmt.Sprintf("unknown trigger kind %q", rec.Trigger.Kind)
	case rec.MaxExecutionTime < 0:
		problem = "negative MaxExecutionTime"
	case rec.Next < 0 || rec.Next > maxNext:
		problem = fmt.Sprintf("next time %d out of range", rec.Next)
	}
	for _, c := range rec.Conditions {
		if !c.valid() {
			problem = fmt.Sprintf("unknown system condition type %d", c)
		}
	}
	if rec.Last != nil {
		for _, name := range rec.Last.Is {
			if storedSentinels[name] == nil {
				problem = fmt.Sprintf("unknown error kind %q", name)
			}
		}
	}
	if problem != "" {
		return nil, errorf(ErrStoreCorrupt, subject, problem)
	}
	return &rec, nil
}

// trigger returns a new trigger with the record's settings.
func (rec *record) trigger() Trigger {
	switch rec.Trigger.Kind {
	case "time":
		return &TimeTrigger{FreshnessTime: rec.Trigger.Period, OneShot: rec.Trigger.OneShot}
	case "system":
		return &SystemTrigger{Type: rec.Trigger.System, OneShot: rec.Trigger.OneShot}
	}
	return &ApplicationTrigger{OneShot: rec.Trigger.OneShot}
}

// builder returns the Builder the record stands for.
func (rec *record) builder() Builder {
	b := Builder{Name: rec.Name, TaskEntryPoint: rec.EntryPoint, Trigger: rec.trigger(),
		CancelOnConditionLoss: rec.CancelOnConditionLoss, MaxExecutionTime: rec.MaxExecutionTime}
	for _, c := range rec.Conditions {
		b.Conditions = append(b.Conditions, SystemCondition{Type: c})
	}
	return b
}

// result returns the stored result as the Completed event's arguments: Err has the same
// text and matches the same sentinels.
func (res *resultRecord) result() *CompletedEventArgs {
	if res == nil {
		return nil
	}
	e := &CompletedEventArgs{InstanceID: res.InstanceID, Canceled: res.Canceled, Reason: res.Reason,
		Progress: res.Progress, Started: timeOf(res.Started), Finished: timeOf(res.Finished)}
	if res.Err != "" || len(res.Is) > 0 {
		se := &storedError{text: res.Err}
		for _, name := range res.Is {
			se.is = append(se.is, storedSentinels[name])
		}
		e.Err = se
	}
	return e
}

// storedError is an error read back from a store: its text, and the sentinels it matched.
type storedError struct {
	text string
	is   []error
}

func (e *storedError) Error() string { return e.text }

func (e *storedError) Is(target error) bool { return slices.Contains(e.is, target) }

package bgtask

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/google/uuid"
)

// A persistent registration is stored as one record, in a compact binary form that starts
// with its version, so that a record of another version is refused rather than misread.
// Times are wall-clock Unix nanoseconds, so that they keep their meaning across restarts.
// With JSON records, decoding was more than half of a restore: BenchmarkRestore10000 took
// 45 ms, and 32 ms with this form (the baseline of reading JSON records with a cursor and
// encoding/json: 28 ms).
//
// The form, in order: the version byte; the name and the entry point, each a uvarint length
// and the bytes; the trigger's kind byte (0 application, 1 time, 2 system); a flags byte
// (1 OneShot, 2 CancelOnConditionLoss, 4 a result follows, 8 the result has an error, which
// its text alone does not tell when it is empty); as varints the period, the
// system trigger type, MaxExecutionTime and the next time; a uvarint count of conditions
// and each as a varint; then, with a result, its 16-byte InstanceID, its error text as a
// length and bytes, a byte of the sentinels it matched (1 canceled, 2 terminated, 4 unknown
// entry point), a byte for Canceled, and as varints Reason, Progress, Started and Finished.

// recordVersion is the version of the records this package writes and reads.
const recordVersion = 1

// maxNext is the latest next time a record may hold (in 2116): far enough for any period,
// near enough that the host's clock arithmetic cannot overflow.
const maxNext = 1 << 62

type record struct {
	Version               int
	Name                  string
	EntryPoint            string
	Trigger               triggerRecord
	Conditions            []SystemConditionType
	CancelOnConditionLoss bool
	MaxExecutionTime      time.Duration
	Next                  int64 // a time trigger's earliest slot not fired
	Last                  *resultRecord
}

type triggerRecord struct {
	Kind    string // "application", "time" or "system"
	OneShot bool
	Period  time.Duration
	System  SystemTriggerType
}

type resultRecord struct {
	InstanceID uuid.UUID
	Err        string
	Failed     bool     // the result has an error, whose text may be empty
	Is         []string // the sentinels Err matched
	Canceled   bool
	Reason     CancellationReason
	Progress   uint32
	Started    int64
	Finished   int64
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
	return rec.encode()
}

// The kinds and sentinels as the binary form numbers them.
var (
	kindCodes     = []string{"application", "time", "system"}
	sentinelCodes = []string{"canceled", "terminated", "unknown_entry_point"} // bits 1, 2, 4
)

const (
	flagOneShot = 1 << iota
	flagCancelOnConditionLoss
	flagResult
	flagFailed
)

// encode returns the binary form of rec (see the top of this file).
func (rec *record) encode() []byte {
	b := []byte{byte(rec.Version)}
	b = appendString(b, rec.Name)
	b = appendString(b, rec.EntryPoint)
	b = append(b, byte(max(slices.Index(kindCodes, rec.Trigger.Kind), 0)))
	var flags byte
	if rec.Trigger.OneShot {
		flags |= flagOneShot
	}
	if rec.CancelOnConditionLoss {
		flags |= flagCancelOnConditionLoss
	}
	if rec.Last != nil {
		flags |= flagResult
		if rec.Last.Failed {
			flags |= flagFailed
		}
	}
	b = append(b, flags)
	b = binary.AppendVarint(b, int64(rec.Trigger.Period))
	b = binary.AppendVarint(b, int64(rec.Trigger.System))
	b = binary.AppendVarint(b, int64(rec.MaxExecutionTime))
	b = binary.AppendVarint(b, rec.Next)
	b = binary.AppendUvarint(b, uint64(len(rec.Conditions)))
	for _, c := range rec.Conditions {
		b = binary.AppendVarint(b, int64(c))
	}
	if last := rec.Last; last != nil {
		b = append(b, last.InstanceID[:]...)
		b = appendString(b, last.Err)
		var is byte
		for k, name := range sentinelCodes {
			if slices.Contains(last.Is, name) {
				is |= 1 << k
			}
		}
		canceled := byte(0)
		if last.Canceled {
			canceled = 1
		}
		b = append(b, is, canceled)
		b = binary.AppendVarint(b, int64(last.Reason))
		b = binary.AppendUvarint(b, uint64(last.Progress))
		b = binary.AppendVarint(b, last.Started)
		b = binary.AppendVarint(b, last.Finished)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// reader reads the binary form; its first error sticks, and every read after it returns
// zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = errors.New("truncated or malformed " + what)
	}
}

func (r *reader) byte(what string) byte {
	if r.err != nil || len(r.b) == 0 {
		r.fail(what)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) varint(what string) int64 {
	v, n := binary.Varint(r.b)
	if r.err != nil || n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uvarint(what string) uint64 {
	v, n := binary.Uvarint(r.b)
	if r.err != nil || n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n uint64, what string) []byte {
	if r.err != nil || n > uint64(len(r.b)) {
		r.fail(what)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) string(what string) string { return string(r.bytes(r.uvarint(what), what)) }

// parse reads the binary form into a record, checking only its shape.
func parse(b []byte) (*record, error) {
	r := &reader{b: b}
	rec := &record{Version: int(r.byte("version"))}
	if rec.Version != recordVersion {
		return rec, nil // refused by the caller, naming the version
	}
	rec.Name = r.string("name")
	rec.EntryPoint = r.string("entry point")
	kind := int(r.byte("trigger kind"))
	rec.Trigger.Kind = fmt.Sprintf("kind %d", kind)
	if kind < len(kindCodes) {
		rec.Trigger.Kind = kindCodes[kind]
	}
	flags := r.byte("flags")
	rec.Trigger.OneShot = flags&flagOneShot != 0
	rec.CancelOnConditionLoss = flags&flagCancelOnConditionLoss != 0
	rec.Trigger.Period = time.Duration(r.varint("period"))
	rec.Trigger.System = SystemTriggerType(r.varint("system trigger type"))
	rec.MaxExecutionTime = time.Duration(r.varint("MaxExecutionTime"))
	rec.Next = r.varint("next time")
	n := r.uvarint("conditions")
	if n > uint64(len(r.b)) { // each takes a byte at least
		r.fail("conditions")
		n = 0
	}
	for range n {
		rec.Conditions = append(rec.Conditions, SystemConditionType(r.varint("condition")))
	}
	if flags&flagResult != 0 {
		last := &resultRecord{}
		copy(last.InstanceID[:], r.bytes(16, "instance id"))
		last.Err = r.string("error")
		last.Failed = flags&flagFailed != 0
		is := r.byte("error kinds")
		for k, name := range sentinelCodes {
			if is&(1<<k) != 0 {
				last.Is = append(last.Is, name)
			}
		}
		if is>>len(sentinelCodes) != 0 {
			r.fail("error kinds")
		}
		last.Canceled = r.byte("canceled") != 0
		last.Reason = CancellationReason(r.varint("reason"))
		last.Progress = uint32(min(r.uvarint("progress"), math.MaxUint32))
		last.Started = r.varint("started")
		last.Finished = r.varint("finished")
		rec.Last = last
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d bytes after the record", len(r.b))
	}
	return rec, r.err
}

func resultOf(e *CompletedEventArgs) *resultRecord {
	if e == nil {
		return nil
	}
	res := &resultRecord{InstanceID: e.InstanceID, Canceled: e.Canceled, Reason: e.Reason,
		Progress: e.Progress, Started: unixNano(e.Started), Finished: unixNano(e.Finished)}
	if e.Err != nil {
		res.Err, res.Failed = e.Err.Error(), true
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
	rec, err := parse(b)
	if err != nil {
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
	return rec, nil
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
	if res.Failed || res.Err != "" || len(res.Is) > 0 { // records written before flagFailed have text
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

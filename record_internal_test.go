package bgtask

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// encodedRecords returns the records of real registrations, encoded as the host stores
// them, with results of each kind.
func encodedRecords(tb testing.TB) [][]byte {
	tb.Helper()
	nop := TaskFunc(func(context.Context, BackgroundTaskInstance) error { return nil })
	h, err := NewHost(WithEntryPoint("job", nop))
	require.NoError(tb, err)
	now := time.Now()
	builders := []Builder{
		{Name: "app", TaskEntryPoint: "job", Trigger: &ApplicationTrigger{OneShot: true}},
		{Name: "tick", TaskEntryPoint: "job", Trigger: &TimeTrigger{FreshnessTime: 15 * time.Minute}, MaxExecutionTime: time.Minute},
		{Name: "net", TaskEntryPoint: "job", Trigger: &SystemTrigger{Type: SystemTriggerInternetAvailable},
			Conditions:            []Condition{SystemCondition{Type: SystemConditionInternetAvailable}, SystemCondition{Type: SystemConditionUserNotPresent}},
			CancelOnConditionLoss: true},
		{Name: "orphan", TaskEntryPoint: "job", Trigger: &TimeTrigger{FreshnessTime: time.Hour, OneShot: true}},
	}
	results := []*CompletedEventArgs{
		nil,
		{InstanceID: uuid.New(), Err: errors.New("upload failed"), Progress: 40, Started: now, Finished: now.Add(time.Second)},
		{InstanceID: uuid.New(), Err: &TerminatedError{Canceled: &CanceledError{Reason: ConditionLoss}}, Canceled: true,
			Reason: ConditionLoss, Started: now, Finished: now.Add(time.Minute)},
		{InstanceID: uuid.New(), Err: errorf(ErrUnknownEntryPoint, `registration "orphan"`, `"job"`), Finished: now},
	}
	var out [][]byte
	for k, b := range builders {
		task, set, err := h.check(b)
		require.NoError(tb, err)
		r := h.newRegistration(b, task, set) // not registered: no lock needed
		r.last = results[k]
		out = append(out, r.encodeRecordLocked())
	}
	require.NoError(tb, h.Shutdown(context.Background()))
	return out
}

// canonical returns rec with empty slices made nil, as they come back from the binary form.
func canonical(rec *record) *record {
	c := *rec
	if len(c.Conditions) == 0 {
		c.Conditions = nil
	}
	if c.Last != nil {
		last := *c.Last
		if len(last.Is) == 0 {
			last.Is = nil
		}
		c.Last = &last
	}
	return &c
}

func TestEncodedRecordsDecode(t *testing.T) {
	for _, b := range encodedRecords(t) {
		rec, err := decodeRecord(uuid.Nil, b)
		require.NoError(t, err, "%s", b)
		assert.Equal(t, recordVersion, rec.Version)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, b := range encodedRecords(f) {
		f.Add(b)
	}
	valid := (&record{Version: recordVersion, Name: "x", EntryPoint: "x", Trigger: triggerRecord{Kind: "application"}}).encode()
	for _, b := range [][]byte{
		nil,
		[]byte("\x00\xff garbage {"),
		append([]byte{99}, valid[1:]...), // another version
		valid[:len(valid)-1],             // truncated
		append(slices.Clone(valid), 0),   // a byte too many
		(&record{Version: recordVersion, Name: "x", EntryPoint: "x", Trigger: triggerRecord{Kind: "time", Period: -time.Second}}).encode(),
		(&record{Version: recordVersion, Name: "x", EntryPoint: "x", Trigger: triggerRecord{Kind: "system", System: 99}}).encode(),
		(&record{Version: recordVersion, Name: "x", EntryPoint: "x", Trigger: triggerRecord{Kind: "application"}, Conditions: []SystemConditionType{42}}).encode(),
		(&record{Version: recordVersion, Name: "x", EntryPoint: "x", Trigger: triggerRecord{Kind: "application"}, MaxExecutionTime: -1}).encode(),
		(&record{Version: recordVersion, Name: "", EntryPoint: "x", Trigger: triggerRecord{Kind: "application"}}).encode(),
		(&record{Version: recordVersion, Name: "x", EntryPoint: "x", Trigger: triggerRecord{Kind: "application"}, Next: -5}).encode(),
		(&record{Version: recordVersion, Name: "x", EntryPoint: "x", Trigger: triggerRecord{Kind: "application"}, Last: &resultRecord{Is: []string{"canceled"}}}).encode(),
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := decodeRecord(uuid.Nil, b)
		if err != nil {
			require.ErrorIs(t, err, ErrStoreCorrupt)
			require.Nil(t, rec)
			return
		}
		// Rebuilt as the host rebuilds it, it does not panic.
		builder := rec.builder()
		set := builder.Trigger.settings()
		assert.Equal(t, rec.Trigger.Kind, kindNames[set.kind])
		assert.Equal(t, len(rec.Conditions), len(builder.Conditions))
		last := rec.Last.result()
		if rec.Last != nil {
			// The result written back has the same text and matches the same sentinels.
			again := resultOf(last)
			want := canonical(rec).Last
			want.Is = slices.Compact(slices.Sorted(slices.Values(want.Is)))
			if len(want.Is) == 0 {
				want.Is = nil
			}
			want.Failed = want.Failed || want.Err != "" || len(want.Is) > 0 // as written before flagFailed
			assert.Equal(t, want, again)
		}

		// Re-encoded, it decodes again to an equal record.
		encoded := rec.encode()
		rec2, err := decodeRecord(uuid.Nil, encoded)
		require.NoError(t, err, "%s", encoded)
		assert.Equal(t, canonical(rec), rec2)
	})
}

package bgtaskriver

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
)

func TestInstanceIDHoldsTheJobID(t *testing.T) {
	at := time.Date(2026, 11, 25, 8, 0, 0, 123456000, time.UTC)
	for _, jobID := range []int64{1, 2, 0xff, 0x100, 0xfff, 0x1000, 0x123456789abcdef, maxJobID} {
		id := instanceID(jobID, at)
		assert.Equal(t, uuid.Version(8), id.Version(), "%#x", jobID)
		assert.Equal(t, uuid.RFC4122, id.Variant(), "%#x", jobID)
		got, ok := jobIDOf(id)
		assert.True(t, ok, "%#x", jobID)
		assert.Equal(t, jobID, got)
		parsed, err := uuid.Parse(id.String())
		assert.NoError(t, err)
		assert.Equal(t, id, parsed, "it survives its text")
	}
}

// Every fetch of a job names a new instance: AttemptedAt, at microseconds, changes.
func TestInstanceIDDiffersForEachFetch(t *testing.T) {
	at := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	seen := make(map[uuid.UUID]bool)
	for k := range 1000 {
		id := instanceID(42, at.Add(time.Duration(k)*time.Microsecond))
		assert.False(t, seen[id], "fetch %d", k)
		seen[id] = true
	}
	assert.Equal(t, instanceID(42, at), instanceID(42, at.Add(999*time.Nanosecond)), "what Postgres does not keep does not count")
	assert.NotEqual(t, instanceID(42, at), instanceID(43, at))
}

func TestJobIDOfRefusesOtherUUIDs(t *testing.T) {
	for _, id := range []uuid.UUID{uuid.Nil, uuid.New(), uuid.Must(uuid.NewV7()), uuid.Max} {
		_, ok := jobIDOf(id)
		assert.False(t, ok, id)
	}
	id := instanceID(7, time.Now())
	id[8] &^= 0x80 // another variant
	_, ok := jobIDOf(id)
	assert.False(t, ok)
	var zero uuid.UUID
	zero[6], zero[8] = 0x80, 0x80 // version 8, job 0
	_, ok = jobIDOf(zero)
	assert.False(t, ok, "job ids start at 1")
}

package bgtaskriver

import (
	"encoding/binary"
	"time"

	"github.com/google/uuid"
)

// An InstanceID names one run of a job, the same in every replica, so that any replica can
// cancel or read an instance by its InstanceID alone. It holds the job's id, which River
// never reuses, and a hash of the moment the job was fetched for this run (its
// AttemptedAt): River hands an attempt back when a job is snoozed or its replica stops,
// so the attempt number can repeat, but every fetch sets AttemptedAt anew.
//
// The layout is a UUID of version 8 (RFC 9562, "custom"):
//
//	bytes 0–7   the job id, 60 bits: its top 48 bits, the version nibble, then its low 12 bits
//	bytes 8–15  64 bits of the hash of AttemptedAt, the two variant bits of byte 8 set over it

// maxJobID is the largest job id an InstanceID holds. River's ids come from a Postgres
// sequence that starts at 1: a fleet would insert a billion jobs a second for 36 years to
// pass it.
const maxJobID = 1<<60 - 1

// instanceID returns the InstanceID of the run of job jobID fetched at attemptedAt, which is
// read at microseconds, the precision Postgres keeps. jobID must be in [1, maxJobID].
func instanceID(jobID int64, attemptedAt time.Time) uuid.UUID {
	n := uint64(jobID)
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[:8], n>>12<<16|0x8000|n>>8&0xf<<8|n&0xff)
	binary.BigEndian.PutUint64(id[8:], mix(uint64(attemptedAt.UnixMicro()))&^(0x3<<62)|0x2<<62)
	return id
}

// jobIDOf returns the job id that id holds, and false for an id that is not an
// InstanceID's layout.
func jobIDOf(id uuid.UUID) (int64, bool) {
	if id.Version() != 8 || id.Variant() != uuid.RFC4122 {
		return 0, false
	}
	w := binary.BigEndian.Uint64(id[:8])
	n := w>>16<<12 | w>>8&0xf<<8 | w&0xff
	return int64(n), n > 0
}

// mix is SplitMix64's finalizer: every bit of x changes about half of the result's, so
// that the hashes of nearby times differ everywhere, and it is the same in every process.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

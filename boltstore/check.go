package boltstore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The names in the file.
var (
	bucketRegistrations = []byte("registrations")
	bucketMeta          = []byte("meta")
	keyFormat           = []byte("format")
	formatV1            = []byte("bgtask-boltstore/1")
)

// errEmpty is what verify reports for a bbolt database without any bucket: a new one.
var errEmpty = errors.New("boltstore: empty database")

// guard runs f and turns a panic in it into an error matching bgtask.ErrStoreCorrupt.
// bbolt reads the file through a memory map and trusts what it reads: a damaged file can
// make it panic (an assertion, an index out of range) or fault (a page past the end of a
// truncated file). guard makes such a fault a panic, for this goroutine only, while f runs.
// Only call bbolt in f from this goroutine, and let bbolt's View or Update inside f roll
// its transaction back on the way out.
func guard(path string, f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if v := recover(); v != nil {
			err = corrupt(path, "reading the file: panic: %v", v)
		}
	}()
	return f()
}

// openDB opens path with bbolt, with opts and waiting for the lock until deadline. It maps
// a timeout to ErrLocked, a failure to read or map the file to the I/O error, and what
// bbolt finds wrong with the file (or a panic) to a *corruptError.
//
// A panic inside bolt.Open leaves what bbolt had opened: the file, its mapping, and so its
// lock (flock), until the process exits. Open only lets bbolt read the file inside
// bolt.Open (the freelist) after check has read the rest, in a read-only open, whose lock
// is shared: after such a failure, Open fails the same way again, rather than with
// ErrLocked.
func openDB(path string, opts bolt.Options, deadline time.Time) (*bolt.DB, error) {
	opts.Timeout = max(time.Until(deadline), time.Millisecond) // 0 would wait forever
	var db *bolt.DB
	err := guard(path, func() (err error) {
		db, err = bolt.Open(path, 0o600, &opts)
		return err
	})
	var ce *corruptError
	switch {
	case err == nil:
		return db, nil
	case errors.As(err, &ce):
		return nil, err
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s", ErrLocked, path) // the sentinel says boltstore and what
	case isIOError(err):
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	default: // bbolt's word on the contents: invalid, version mismatch, checksum, too small
		return nil, corrupt(path, "not a bbolt database: %w", err)
	}
}

// isIOError reports whether err is about reaching the file rather than about its
// contents.
func isIOError(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &errno)
}

// check opens path, an existing file, read-only and checks it, so that Open never opens
// a foreign or damaged file for writing (bbolt writes to a file it opens for writing in
// one case: a database written without its freelist). It checks the file (see verify),
// then has bbolt read its freelist, in a second read-only open (see openDB).
func check(path string, deadline time.Time) error {
	db, err := openDB(path, bolt.Options{ReadOnly: true}, deadline)
	if err != nil {
		return err
	}
	verr := guard(path, func() error {
		return db.View(func(tx *bolt.Tx) error { return verify(path, tx, true) })
	})
	db.Close()
	if verr != nil && !errors.Is(verr, errEmpty) {
		return verr
	}
	db, err = openDB(path, bolt.Options{ReadOnly: true, PreLoadFreelist: true}, deadline)
	if err != nil {
		return err
	}
	db.Close()
	return verr
}

// verify checks that tx sees a boltstore database: exactly the buckets "meta", with the
// format marker, and "registrations", with a value (not a bucket) under each key. It
// returns errEmpty for a database without buckets. When deep, it also checks that the
// file holds every page the database has, and reads every key of the registrations
// bucket, checking that each is 16 bytes and that they are in order.
//
// The deep check does not run bbolt's tx.Check: that runs on a goroutine of its own,
// where reading a damaged page can fault (a key pointing past the end of the mapping),
// and a fault there could not be recovered.
func verify(path string, tx *bolt.Tx, deep bool) error {
	if deep {
		info, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("boltstore: %w", err)
		}
		if tx.Size() > info.Size() {
			return corrupt(path, "truncated: the database has %d bytes, the file %d", tx.Size(), info.Size())
		}
	}
	n := 0
	err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		n++
		if string(name) != string(bucketMeta) && string(name) != string(bucketRegistrations) {
			return corrupt(path, "not a boltstore database: unexpected bucket %q", name)
		}
		return nil
	})
	switch {
	case err != nil:
		return err
	case n == 0:
		return errEmpty
	}
	m := tx.Bucket(bucketMeta)
	if m == nil {
		return corrupt(path, "not a boltstore database: no %q bucket", bucketMeta)
	}
	if f := m.Get(keyFormat); string(f) != string(formatV1) {
		if f == nil {
			return corrupt(path, "not a boltstore database: no format marker")
		}
		return corrupt(path, "format %q, want %q", f, formatV1)
	}
	b := tx.Bucket(bucketRegistrations)
	if b == nil {
		return corrupt(path, "no %q bucket", bucketRegistrations)
	}
	if !deep {
		return nil
	}
	var prev uuid.UUID
	first, size := true, tx.Size()
	return b.ForEach(func(k, v []byte) error {
		if err := checkEntry(path, size, k, v); err != nil {
			return err
		}
		id := uuid.UUID(k) // reads the key here, where a fault is recovered
		if !first && bytes.Compare(prev[:], id[:]) >= 0 {
			return corrupt(path, "key %x of bucket %q after key %x: out of order", k, bucketRegistrations, prev)
		}
		prev, first = id, false
		return nil
	})
}

// checkEntry checks one entry of the registrations bucket, of a database of size bytes.
func checkEntry(path string, size int64, k, v []byte) error {
	switch {
	case v == nil:
		return corrupt(path, "key %s of bucket %q is a bucket, not a record", keyText(k), bucketRegistrations)
	case len(k) != 16:
		return corrupt(path, "key %s of bucket %q is %d bytes, not a 16-byte TaskID", keyText(k), bucketRegistrations, len(k))
	case int64(len(v)) > size: // a damaged length: do not copy it
		return corrupt(path, "record %x is %d bytes, more than the database", k, len(v))
	}
	return nil
}

// keyText returns k in hex, or its start when it is long (as a damaged length makes it).
func keyText(k []byte) string {
	if len(k) > 32 {
		return fmt.Sprintf("%x… (%d bytes)", k[:32], len(k))
	}
	return fmt.Sprintf("%x", k)
}

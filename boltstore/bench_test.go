package boltstore_test

import (
	"bytes"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask/boltstore"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// The baselines write the same bytes with bbolt directly, in a bucket of the same name.

// value is what the benchmarks write: about the size of a host's record.
var value = bytes.Repeat([]byte("r"), 300)

var bucket = []byte("registrations")

func openStore(b *testing.B) *boltstore.Store {
	s, err := boltstore.Open(filepath.Join(b.TempDir(), "bgtask.db"))
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, s.Close()) })
	return s
}

func openBolt(b *testing.B) *bolt.DB {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "bolt.db"), 0o600, &bolt.Options{Timeout: time.Second})
	require.NoError(b, err)
	require.NoError(b, db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucket); return err }))
	b.Cleanup(func() { require.NoError(b, db.Close()) })
	return db
}

// put writes one record in tx.
func put(tx *bolt.Tx) error {
	id := uuid.New()
	return tx.Bucket(bucket).Put(id[:], value)
}

func BenchmarkApply(b *testing.B) {
	s := openStore(b)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Apply(ctx, map[uuid.UUID][]byte{uuid.New(): value}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApplyBaselineBoltUpdate(b *testing.B) {
	db := openBolt(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := db.Update(put); err != nil {
			b.Fatal(err)
		}
	}
}

// batchDelays are the MaxBatchDelay of the db.Batch baselines: bbolt's default, and less.
var batchDelays = []time.Duration{10 * time.Millisecond, time.Millisecond}

func BenchmarkApplyBaselineBoltBatch(b *testing.B) {
	for _, delay := range batchDelays {
		b.Run("MaxBatchDelay="+delay.String(), func(b *testing.B) {
			db := openBolt(b)
			db.MaxBatchDelay = delay
			b.ReportAllocs()
			for b.Loop() {
				if err := db.Batch(put); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// parallel16 runs apply on 16 goroutines (or the next multiple of GOMAXPROCS) and reports
// the Applies per second.
func parallel16(b *testing.B, apply func() error) {
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((16 + procs - 1) / procs)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := apply(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkApplyParallel16(b *testing.B) {
	s := openStore(b)
	ctx := b.Context()
	parallel16(b, func() error { return s.Apply(ctx, map[uuid.UUID][]byte{uuid.New(): value}, nil) })
}

func BenchmarkApplyParallel16BaselineBoltUpdate(b *testing.B) {
	db := openBolt(b)
	parallel16(b, func() error { return db.Update(put) })
}

func BenchmarkApplyParallel16BaselineBoltBatch(b *testing.B) {
	for _, delay := range batchDelays {
		b.Run("MaxBatchDelay="+delay.String(), func(b *testing.B) {
			db := openBolt(b)
			db.MaxBatchDelay = delay
			parallel16(b, func() error { return db.Batch(put) })
		})
	}
}

// records returns 10,000 records of 300 bytes.
func records() map[uuid.UUID][]byte {
	recs := make(map[uuid.UUID][]byte, 10_000)
	for range 10_000 {
		recs[uuid.New()] = value
	}
	return recs
}

// store10000 returns the path of a store file holding 10,000 records.
func store10000(b *testing.B) string {
	path := filepath.Join(b.TempDir(), "bgtask.db")
	s, err := boltstore.Open(path)
	require.NoError(b, err)
	require.NoError(b, s.Apply(b.Context(), records(), nil))
	require.NoError(b, s.Close())
	return path
}

func BenchmarkLoad10000(b *testing.B) {
	s, err := boltstore.Open(store10000(b))
	require.NoError(b, err)
	defer s.Close()
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		recs, err := s.Load(ctx)
		if err != nil || len(recs) != 10_000 {
			b.Fatal(len(recs), err)
		}
	}
}

// BenchmarkLoad10000BaselineBoltCursor reads the same file with a bbolt cursor into the
// same map of copies.
func BenchmarkLoad10000BaselineBoltCursor(b *testing.B) {
	db, err := bolt.Open(store10000(b), 0o600, &bolt.Options{Timeout: time.Second})
	require.NoError(b, err)
	defer db.Close()
	b.ReportAllocs()
	for b.Loop() {
		recs := make(map[uuid.UUID][]byte)
		err := db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucket).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				recs[uuid.UUID(k)] = bytes.Clone(v)
			}
			return nil
		})
		if err != nil || len(recs) != 10_000 {
			b.Fatal(len(recs), err)
		}
	}
}

// BenchmarkOpen10000 opens and closes a store of 10,000 records: Open checks the file.
func BenchmarkOpen10000(b *testing.B) {
	path := store10000(b)
	b.ReportAllocs()
	for b.Loop() {
		s, err := boltstore.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

func BenchmarkOpen10000BaselineBoltOpen(b *testing.B) {
	path := store10000(b)
	b.ReportAllocs()
	for b.Loop() {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
}

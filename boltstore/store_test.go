package boltstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// dbPath returns a path for a store file, in a directory removed after the test.
func dbPath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "bgtask.db")
}

// record returns a record of about 300 bytes, different for each i.
func record(i int) []byte {
	return fmt.Appendf(nil, "record %d %s", i, strings.Repeat("x", 290))
}

// open opens the store at path, and closes it when the test ends.
func open(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

// txID returns the ID of the last transaction s committed: one more for each commit.
func txID(t *testing.T, s *Store) int {
	t.Helper()
	var id int
	require.NoError(t, s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }))
	return id
}

// writeStore makes a store file at path holding n records.
func writeStore(t *testing.T, path string, n int) {
	t.Helper()
	s, err := Open(path)
	require.NoError(t, err)
	put := make(map[uuid.UUID][]byte, n)
	for i := range n {
		put[uuid.New()] = record(i)
	}
	require.NoError(t, s.Apply(t.Context(), put, nil))
	require.NoError(t, s.Close())
}

// writeBolt makes a bbolt file at path and runs fn in a transaction on it.
func writeBolt(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(fn))
	require.NoError(t, db.Close())
}

func TestOpenCreatesFile(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path)
	require.NoError(t, err)
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	require.NoError(t, s.Close())

	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket([]byte("meta"))
		require.NotNil(t, m)
		assert.Equal(t, "bgtask-boltstore/1", string(m.Get([]byte("format"))))
		r := tx.Bucket([]byte("registrations"))
		require.NotNil(t, r)
		assert.Zero(t, r.Stats().KeyN)
		return nil
	}))
}

func TestApplyLoad(t *testing.T) {
	ctx := t.Context()
	path := dbPath(t)
	s, err := Open(path)
	require.NoError(t, err)
	a, b, c, d := uuid.New(), uuid.New(), uuid.New(), uuid.New()

	require.NoError(t, s.Apply(ctx, map[uuid.UUID][]byte{a: record(1), b: record(2)}, nil))
	got, err := s.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[uuid.UUID][]byte{a: record(1), b: record(2)}, got)

	// Puts and deletes together; deleting a missing record is not an error.
	require.NoError(t, s.Apply(ctx, map[uuid.UUID][]byte{a: record(3), c: record(4)}, []uuid.UUID{b, d}))
	got, err = s.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[uuid.UUID][]byte{a: record(3), c: record(4)}, got)

	// A TaskID in both put and del is deleted; an empty record stays empty.
	put := map[uuid.UUID][]byte{c: record(5), d: {}}
	require.NoError(t, s.Apply(ctx, put, []uuid.UUID{c}))
	put[d] = []byte("changed after Apply returned")
	got, err = s.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[uuid.UUID][]byte{a: record(3), d: {}}, got)
	assert.NotNil(t, got[d])

	// Load returns copies.
	got[a][0] = 'X'
	again, err := s.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, record(3), again[a])
	require.NoError(t, s.Close())

	// And the file keeps them.
	s = open(t, path)
	got, err = s.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[uuid.UUID][]byte{a: record(3), d: {}}, got)
}

func TestApplyNothingIsNoOp(t *testing.T) {
	s := open(t, dbPath(t))
	before := txID(t, s)
	assert.NoError(t, s.Apply(t.Context(), nil, nil))
	assert.NoError(t, s.Apply(t.Context(), map[uuid.UUID][]byte{}, []uuid.UUID{}))
	assert.Equal(t, before, txID(t, s), "no transaction")
	require.NoError(t, s.Apply(t.Context(), nil, []uuid.UUID{uuid.New()}))
	assert.Equal(t, before+1, txID(t, s))
}

func TestApplyGroupsConcurrentApplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := open(t, dbPath(t))
		before := txID(t, s)
		s.lead <- struct{}{} // as if an Apply were writing
		var wg sync.WaitGroup
		want := make(map[uuid.UUID][]byte)
		for i := range 16 {
			id := uuid.New()
			want[id] = record(i)
			wg.Go(func() {
				assert.NoError(t, s.Apply(t.Context(), map[uuid.UUID][]byte{id: record(i)}, nil))
			})
		}
		synctest.Wait()
		s.qmu.Lock()
		assert.Len(t, s.queue, 16)
		s.qmu.Unlock()
		<-s.lead
		wg.Wait()
		assert.Equal(t, before+1, txID(t, s), "16 Applies, one transaction")
		got, err := s.Load(t.Context())
		require.NoError(t, err)
		assert.Equal(t, want, got)
	})
}

func TestConcurrentUse(t *testing.T) {
	ctx := t.Context()
	s := open(t, dbPath(t))
	var wg sync.WaitGroup
	ids := make([]uuid.UUID, 8)
	for g := range ids {
		ids[g] = uuid.New()
		wg.Go(func() {
			for i := range 5 {
				assert.NoError(t, s.Apply(ctx, map[uuid.UUID][]byte{ids[g]: record(i)}, nil))
				recs, err := s.Load(ctx)
				if assert.NoError(t, err) {
					assert.Equal(t, record(i), recs[ids[g]])
				}
			}
		})
	}
	wg.Wait()
	recs, err := s.Load(ctx)
	require.NoError(t, err)
	assert.Len(t, recs, len(ids))
}

func TestCloseDuringUse(t *testing.T) {
	ctx := t.Context()
	s, err := Open(dbPath(t))
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			id := uuid.New()
			for i := 0; ; i++ {
				var err error
				if g%2 == 0 {
					err = s.Apply(ctx, map[uuid.UUID][]byte{id: record(i)}, nil)
				} else {
					_, err = s.Load(ctx)
				}
				if err != nil {
					assert.ErrorIs(t, err, ErrClosed)
					return
				}
			}
		})
	}
	assert.NoError(t, s.Close())
	wg.Wait()
}

func TestClosed(t *testing.T) {
	ctx := t.Context()
	s, err := Open(dbPath(t))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	assert.NoError(t, s.Close(), "Close is idempotent")

	var zero Store
	for name, s := range map[string]*Store{"closed": s, "zero": &zero} {
		t.Run(name, func(t *testing.T) {
			_, err := s.Load(ctx)
			assert.ErrorIs(t, err, ErrClosed)
			assert.ErrorIs(t, s.Apply(ctx, map[uuid.UUID][]byte{uuid.New(): record(0)}, nil), ErrClosed)
			assert.ErrorIs(t, s.Apply(ctx, nil, nil), ErrClosed)
			assert.NoError(t, s.Close())
		})
	}
}

func TestContextDone(t *testing.T) {
	s := open(t, dbPath(t))
	before := txID(t, s)
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel := context.WithDeadline(t.Context(), time.Unix(0, 0))
	defer cancel()
	for ctx, want := range map[context.Context]error{canceled: context.Canceled, expired: context.DeadlineExceeded} {
		_, err := s.Load(ctx)
		assert.Equal(t, want, err)
		assert.Equal(t, want, s.Apply(ctx, map[uuid.UUID][]byte{uuid.New(): record(0)}, nil))
	}
	assert.Equal(t, before, txID(t, s), "nothing written")
}

// TestOpenLocked opens the file twice in this process: the second Open waits a second,
// on the fake clock, and fails.
func TestOpenLocked(t *testing.T) {
	path := dbPath(t)
	first, err := Open(path)
	require.NoError(t, err)
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		s, err := Open(path)
		waited := time.Since(start)
		assert.ErrorIs(t, err, ErrLocked)
		assert.EqualError(t, err, "boltstore: file in use by another Store: "+path, "says boltstore once")
		assert.NotErrorIs(t, err, bgtask.ErrStoreCorrupt)
		assert.Nil(t, s)
		assert.GreaterOrEqual(t, waited, 900*time.Millisecond)
		assert.LessOrEqual(t, waited, time.Second)
	})
	require.NoError(t, first.Close())
	open(t, path) // free again
}

// holdEnv names the file that TestHoldFile holds open, in a process of its own.
const holdEnv = "BOLTSTORE_TEST_HOLD"

// TestHoldFile is the other process of TestOpenLockedByOtherProcess: it opens the file,
// says "holding", and closes it when its stdin ends.
func TestHoldFile(t *testing.T) {
	path := os.Getenv(holdEnv)
	if path == "" {
		t.Skip("run by TestOpenLockedByOtherProcess")
	}
	s, err := Open(path)
	require.NoError(t, err)
	fmt.Println("holding")
	_, err = io.Copy(io.Discard, os.Stdin)
	assert.NoError(t, err)
	require.NoError(t, s.Close())
}

func TestOpenLockedByOtherProcess(t *testing.T) {
	path := dbPath(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHoldFile$", "-test.count=1")
	cmd.Env = append(os.Environ(), holdEnv+"="+path,
		"GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0") // with -race, exit at once
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var out strings.Builder
	for lines := bufio.NewScanner(stdout); lines.Scan() && lines.Text() != "holding"; {
		out.WriteString(lines.Text() + "\n")
	}

	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		_, err := Open(path)
		assert.ErrorIs(t, err, ErrLocked, "other process: %s", out.String())
		assert.LessOrEqual(t, time.Since(start), time.Second)
	})

	require.NoError(t, stdin.Close())
	_, err = io.Copy(&out, stdout)
	require.NoError(t, err)
	require.NoError(t, cmd.Wait(), out.String())
	open(t, path) // free again
}

// damage makes a file at path that is not a boltstore database, or a damaged one.
type damage func(t *testing.T, path string)

// randomBytes returns n bytes from a generator seeded with seed.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

func writeFile(b []byte) damage {
	return func(t *testing.T, path string) { require.NoError(t, os.WriteFile(path, b, 0o600)) }
}

// overwritePage makes a store of n records and fills its first page of type typ with
// random bytes, or zeros.
func overwritePage(n int, typ string, zero bool) damage {
	return func(t *testing.T, path string) {
		writeStore(t, path, n)
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
		require.NoError(t, err)
		var found *int
		require.NoError(t, db.View(func(tx *bolt.Tx) error {
			for id := 2; ; id++ {
				p, err := tx.Page(id)
				if p == nil || err != nil {
					return err
				}
				if p.Type == typ {
					found = &p.ID
					return nil
				}
			}
		}))
		pageSize := db.Info().PageSize
		require.NoError(t, db.Close())
		require.NotNil(t, found, "no %s page", typ)
		junk := make([]byte, pageSize)
		if !zero {
			junk = randomBytes(uint64(*found), pageSize)
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt(junk, int64(*found*pageSize))
		require.NoError(t, err)
		require.NoError(t, f.Close())
	}
}

var damages = map[string]damage{
	"random bytes":        writeFile(randomBytes(1, 64<<10)),
	"a few random bytes":  writeFile(randomBytes(2, 100)),
	"one byte":            writeFile([]byte{0}),
	"text":                writeFile([]byte("registrations\n")),
	"zeros, one page":     writeFile(make([]byte, 4096)),
	"zeros, sixteen page": writeFile(make([]byte, 64<<10)),
	"bbolt, another program's": func(t *testing.T, path string) {
		writeBolt(t, path, func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("users"))
			if err != nil {
				return err
			}
			return b.Put([]byte("ann"), []byte("admin"))
		})
	},
	"bbolt, without meta": func(t *testing.T, path string) {
		writeBolt(t, path, func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("registrations"))
			if err != nil {
				return err
			}
			id := uuid.New()
			return b.Put(id[:], record(0))
		})
	},
	"bbolt, meta without marker": func(t *testing.T, path string) {
		writeBolt(t, path, func(tx *bolt.Tx) error {
			if _, err := tx.CreateBucket([]byte("meta")); err != nil {
				return err
			}
			_, err := tx.CreateBucket([]byte("registrations"))
			return err
		})
	},
	"another format": func(t *testing.T, path string) {
		writeStore(t, path, 1)
		writeBolt(t, path, func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte("bgtask-boltstore/2"))
		})
	},
	"an extra bucket": func(t *testing.T, path string) {
		writeStore(t, path, 1)
		writeBolt(t, path, func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("extra")); return err })
	},
	"a short key": func(t *testing.T, path string) {
		writeStore(t, path, 3)
		writeBolt(t, path, func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("registrations")).Put([]byte("abc"), record(0))
		})
	},
	"a bucket for a record": func(t *testing.T, path string) {
		writeStore(t, path, 3)
		writeBolt(t, path, func(tx *bolt.Tx) error {
			id := uuid.New()
			_, err := tx.Bucket([]byte("registrations")).CreateBucket(id[:])
			return err
		})
	},
	"truncated": func(t *testing.T, path string) {
		writeStore(t, path, 150)
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		require.NoError(t, err)
		var size int64 // what the pages in use take, less than the file
		require.NoError(t, db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }))
		require.NoError(t, db.Close())
		require.NoError(t, os.Truncate(path, size*6/10))
	},
	"meta pages overwritten": func(t *testing.T, path string) {
		writeStore(t, path, 3)
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt(randomBytes(3, 8192), 0)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	},
	"leaf page overwritten":     overwritePage(150, "leaf", false),
	"leaf page zeroed":          overwritePage(150, "leaf", true),
	"branch page overwritten":   overwritePage(150, "branch", false),
	"freelist page overwritten": overwritePage(150, "freelist", false),
}

// openAndLoad opens the store at path and loads it, and returns the first error.
func openAndLoad(path string) error {
	s, err := Open(path)
	if err != nil {
		return err
	}
	_, err = s.Load(context.Background())
	return errors.Join(err, s.Close())
}

func TestCorruptFile(t *testing.T) {
	for name, damage := range damages {
		t.Run(name, func(t *testing.T) {
			path := dbPath(t)
			damage(t, path)
			before, err := os.ReadFile(path)
			require.NoError(t, err)

			err = openAndLoad(path)
			require.ErrorIs(t, err, bgtask.ErrStoreCorrupt)
			assert.ErrorContains(t, err, path)
			assert.ErrorContains(t, err, "store corrupt")
			if name == "a short key" {
				assert.ErrorContains(t, err, "key 616263 ")
			}
			t.Log(err)

			// Failing left the file unlocked, and as it was.
			assert.ErrorIs(t, openAndLoad(path), bgtask.ErrStoreCorrupt)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(before, after), "the file changed")
		})
	}
}

// TestDamagedFile writes a few random bytes at random places in a store file: opening and
// loading it either works or fails with ErrStoreCorrupt; it never panics, and never
// writes to the file.
func TestDamagedFile(t *testing.T) {
	if raceEnabled {
		t.Skip("random damage can make checkptr, on under -race, abort the process inside bbolt")
	}
	good := dbPath(t)
	writeStore(t, good, 150)
	clean, err := os.ReadFile(good)
	require.NoError(t, err)
	seed := rand.Uint64() // a new sample each run; the failures say which
	r := rand.New(rand.NewPCG(seed, 0))
	for range 40 {
		file := bytes.Clone(clean)
		off := r.IntN(len(file))
		n := min(1+r.IntN(16), len(file)-off)
		for i := range n {
			file[off+i] = byte(r.Uint32())
		}
		path := dbPath(t)
		require.NoError(t, os.WriteFile(path, file, 0o600))
		if err := openAndLoad(path); err != nil {
			assert.ErrorIs(t, err, bgtask.ErrStoreCorrupt, "seed %d: %d bytes at %d", seed, n, off)
		}
		after, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(file, after), "seed %d: the file changed: %d bytes at %d", seed, n, off)
	}
}

func TestLoadBadKey(t *testing.T) {
	path := dbPath(t)
	s := open(t, path)
	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRegistrations).Put([]byte("abc"), record(0))
	}))
	_, err := s.Load(t.Context())
	assert.ErrorIs(t, err, bgtask.ErrStoreCorrupt)
	assert.EqualError(t, err, "boltstore: "+path+`: store corrupt: key 616263 of bucket "registrations" is 3 bytes, not a 16-byte TaskID`)
}

func TestOpenEmptyFileIsNew(t *testing.T) {
	for name, create := range map[string]func(t *testing.T, path string){
		"zero length":       func(t *testing.T, path string) { require.NoError(t, os.WriteFile(path, nil, 0o644)) },
		"bbolt, no buckets": func(t *testing.T, path string) { writeBolt(t, path, func(*bolt.Tx) error { return nil }) },
	} {
		t.Run(name, func(t *testing.T) {
			path := dbPath(t)
			create(t, path)
			s := open(t, path)
			id := uuid.New()
			require.NoError(t, s.Apply(t.Context(), map[uuid.UUID][]byte{id: record(0)}, nil))
			recs, err := s.Load(t.Context())
			require.NoError(t, err)
			assert.Equal(t, map[uuid.UUID][]byte{id: record(0)}, recs)
		})
	}
}

func TestOpenNotRegularFile(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(dir)
	assert.ErrorContains(t, err, "not a regular file")
	_, err = Open(filepath.Join(dir, "missing", "bgtask.db"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

package boltstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/boltstore"
)

// A host over a boltstore: registering a persistent registration beside a bbolt Update
// writing a record of the same size, alone and from 16 goroutines; restoring 10,000
// registrations beside reading and decoding them with a bbolt cursor and encoding/json;
// and the heap a restored registration costs at rest.

var nop = bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })

func persistentHost(b *testing.B, s *boltstore.Store) *bgtask.Host {
	h, err := bgtask.NewHost(bgtask.WithStore(s), bgtask.WithEntryPoint("nop", nop), bgtask.WithLogger(nil))
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, h.Shutdown(context.Background())) })
	return h
}

// builder is a registration whose record is about the size of value.
func builder(k int) bgtask.Builder {
	return bgtask.Builder{Name: fmt.Sprintf("registration-%08d", k), TaskEntryPoint: "nop",
		Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}, MaxExecutionTime: time.Minute,
		Conditions: []bgtask.Condition{bgtask.SystemCondition{Type: bgtask.SystemConditionInternetAvailable}}}
}

func BenchmarkRegisterPersistent(b *testing.B) {
	h := persistentHost(b, openStore(b))
	b.ReportAllocs()
	k := 0
	for b.Loop() {
		k++
		if _, err := h.Register(builder(k)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRegisterPersistentParallel16(b *testing.B) {
	h := persistentHost(b, openStore(b))
	var k atomic.Int64
	parallel16(b, func() error {
		_, err := h.Register(builder(int(k.Add(1))))
		return err
	})
}

func BenchmarkRestore10000(b *testing.B) {
	path := hostFile10000(b)
	s, err := boltstore.Open(path)
	require.NoError(b, err)
	defer s.Close()
	b.ReportAllocs()
	for b.Loop() {
		h, err := bgtask.NewHost(bgtask.WithStore(s), bgtask.WithEntryPoint("nop", nop), bgtask.WithLogger(nil))
		b.StopTimer()
		if err != nil || len(h.AllTasks()) != 10_000 {
			b.Fatal(err)
		}
		_ = h.Shutdown(context.Background())
		b.StartTimer()
	}
}

// jsonRecord is what a registration's record holds, in JSON.
type jsonRecord struct {
	Version    int    `json:"version"`
	Name       string `json:"name"`
	EntryPoint string `json:"entry_point"`
	Trigger    struct {
		Kind    string        `json:"kind"`
		OneShot bool          `json:"one_shot,omitempty"`
		Period  time.Duration `json:"period,omitempty"`
		System  int           `json:"system,omitempty"`
	} `json:"trigger"`
	Conditions            []int         `json:"conditions,omitempty"`
	CancelOnConditionLoss bool          `json:"cancel_on_condition_loss,omitempty"`
	MaxExecutionTime      time.Duration `json:"max_execution_time,omitempty"`
	Next                  int64         `json:"next,omitempty"`
}

// BenchmarkRestore10000BaselineCursorJSON reads the same 10,000 registrations, as JSON
// records, with a bbolt cursor, and decodes each with encoding/json.
func BenchmarkRestore10000BaselineCursorJSON(b *testing.B) {
	db := openBolt(b)
	require.NoError(b, db.Update(func(tx *bolt.Tx) error {
		for k := range 10_000 {
			bl := builder(k)
			rec := jsonRecord{Version: 1, Name: bl.Name, EntryPoint: bl.TaskEntryPoint,
				Conditions: []int{int(bgtask.SystemConditionInternetAvailable)}, MaxExecutionTime: bl.MaxExecutionTime,
				Next: time.Now().Add(time.Hour).UnixNano()}
			rec.Trigger.Kind, rec.Trigger.Period = "time", time.Hour
			v, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			id := uuid.New()
			if err := tx.Bucket(bucket).Put(id[:], v); err != nil {
				return err
			}
		}
		return nil
	}))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		err := db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucket).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				var rec jsonRecord
				if err := json.Unmarshal(bytes.Clone(v), &rec); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil || n != 10_000 {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkHeapPerRestoredRegistration restores 10,000 time-triggered registrations and
// reports the heap they hold at rest.
func BenchmarkHeapPerRestoredRegistration(b *testing.B) {
	s, err := boltstore.Open(hostFile10000(b))
	require.NoError(b, err)
	defer s.Close()
	for b.Loop() {
		before := heapNow()
		h, err := bgtask.NewHost(bgtask.WithStore(s), bgtask.WithEntryPoint("nop", nop), bgtask.WithLogger(nil))
		require.NoError(b, err)
		b.ReportMetric(float64(heapNow()-before)/10_000, "B/registration")
		_ = h.Shutdown(context.Background())
	}
}

func heapNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// hostFile10000 returns the path of a store file holding 10,000 registrations of a host.
func hostFile10000(b *testing.B) string {
	path := b.TempDir() + "/host.db"
	s, err := boltstore.Open(path)
	require.NoError(b, err)
	h, err := bgtask.NewHost(bgtask.WithStore(s), bgtask.WithEntryPoint("nop", nop), bgtask.WithLogger(nil))
	require.NoError(b, err)
	var wg sync.WaitGroup // 64 at a time: their records share transactions
	for w := range 64 {
		wg.Go(func() {
			for k := w; k < 10_000; k += 64 {
				if _, err := h.Register(builder(k)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(b, h.Shutdown(context.Background()))
	require.NoError(b, s.Close())
	return path
}

// BenchmarkRegisterPersistentBesideBoltUpdate alternates a Register of a persistent
// registration and a bbolt Update writing as many bytes, so that both see the same disk
// (whose fsyncs vary from minute to minute), and reports each and their ratio.
func BenchmarkRegisterPersistentBesideBoltUpdate(b *testing.B) {
	h := persistentHost(b, openStore(b))
	db := openBolt(b)
	var reg, upd time.Duration
	k := 0
	for b.Loop() {
		k++
		t0 := time.Now()
		if _, err := h.Register(builder(k)); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := db.Update(put); err != nil {
			b.Fatal(err)
		}
		reg, upd = reg+t1.Sub(t0), upd+time.Since(t1)
	}
	b.ReportMetric(float64(reg.Nanoseconds())/float64(b.N), "ns/register")
	b.ReportMetric(float64(upd.Nanoseconds())/float64(b.N), "ns/update")
	b.ReportMetric(float64(reg)/float64(upd), "ratio")
}

// BenchmarkRegisterPersistent16WritersBesideOne registers 256 registrations one after the
// other, then 256 from 16 goroutines at once, in each iteration, so that both see the same
// disk, and reports the throughput of each and their ratio.
func BenchmarkRegisterPersistent16WritersBesideOne(b *testing.B) {
	h := persistentHost(b, openStore(b))
	var one, sixteen time.Duration
	k := 0
	for b.Loop() {
		t0 := time.Now()
		for range 256 {
			k++
			if _, err := h.Register(builder(k)); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		var wg sync.WaitGroup
		for w := range 16 {
			base := k + w*16
			wg.Go(func() {
				for n := range 16 {
					if _, err := h.Register(builder(base + n + 1)); err != nil {
						b.Error(err)
					}
				}
			})
		}
		wg.Wait()
		k += 256
		one, sixteen = one+t1.Sub(t0), sixteen+time.Since(t1)
	}
	perSec := func(d time.Duration) float64 { return float64(256*b.N) / d.Seconds() }
	b.ReportMetric(perSec(one), "one-writer/s")
	b.ReportMetric(perSec(sixteen), "16-writers/s")
	b.ReportMetric(float64(one)/float64(sixteen), "ratio")
}

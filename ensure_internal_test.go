package bgtask

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gateStore is a map store whose Apply waits for gate while it is set.
type gateStore struct {
	mu   sync.Mutex
	recs map[uuid.UUID][]byte
	gate chan struct{}
}

func (s *gateStore) Load(context.Context) (map[uuid.UUID][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[uuid.UUID][]byte{}
	for k, v := range s.recs {
		out[k] = v
	}
	return out, nil
}

func (s *gateStore) Apply(_ context.Context, put map[uuid.UUID][]byte, del []uuid.UUID) error {
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	if g != nil {
		<-g
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range put {
		s.recs[k] = v
	}
	for _, k := range del {
		delete(s.recs, k)
	}
	return nil
}

// An Ensure's update that found a registration which Unregister then removed writes its
// record again; when Shutdown closes the host during that write, the update still deletes
// the record again: the next host does not restore the registration.
func TestUpdateAfterUnregisterDuringShutdownDeletesTheRecordAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &gateStore{recs: map[uuid.UUID][]byte{}}
		nop := TaskFunc(func(context.Context, BackgroundTaskInstance) error { return nil })
		h, err := NewHost(WithLogger(nil), WithStore(s), WithEntryPoint("ep", nop))
		require.NoError(t, err)
		b := Builder{Name: "job", TaskEntryPoint: "ep", Trigger: &TimeTrigger{FreshnessTime: time.Hour}}
		r, err := h.Register(b)
		require.NoError(t, err)
		// What Ensure does after its scan found r, with Unregister coming right after the scan.
		r.Unregister(false)
		require.Empty(t, s.recs, "Unregister's delete is durable")
		b.MaxExecutionTime = time.Minute
		task, set, err := h.check(b)
		require.NoError(t, err)
		gate := make(chan struct{})
		s.mu.Lock()
		s.gate = gate
		s.mu.Unlock()
		res := make(chan error, 1)
		go func() { res <- h.update(r, b, task, set) }()
		synctest.Wait() // update's write waits in Apply
		go h.Shutdown(context.Background())
		synctest.Wait() // the host is closed
		s.mu.Lock()
		s.gate = nil
		s.mu.Unlock()
		close(gate)
		t.Logf("update: %v", <-res)
		synctest.Wait()
		h2, err := NewHost(WithLogger(nil), WithStore(s), WithEntryPoint("ep", nop))
		require.NoError(t, err)
		_, back := h2.Lookup(r.TaskID())
		assert.False(t, back, "the registration the program unregistered is restored")
		require.NoError(t, h2.Shutdown(context.Background()))
	})
}

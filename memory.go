package bgtask

import (
	"math"
	"runtime/metrics"
	"time"
)

// memoryWatch is the memory pressure monitor: one goroutine of the host, running only when
// [Policy].MemoryLimitFraction is set, that reads the heap every MemoryCheckInterval.
type memoryWatch struct {
	stop chan struct{} // closed by Shutdown; nil when off
	// read returns the heap in use and the memory limit. Tests replace it; the program
	// cannot (see the Policy fields).
	read func() (heap, limit uint64)
}

const (
	defaultMemoryPressurePeriod = 10 * time.Second
	defaultMemoryCheckInterval  = time.Second
)

// readRuntimeMemory reads the live heap and the limit set with debug.SetMemoryLimit or
// GOMEMLIMIT (math.MaxInt64 when none is set).
func readRuntimeMemory() (heap, limit uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

// startMemoryWatch starts the monitor if the policy asks for it; NewHost calls it.
func (h *Host) startMemoryWatch() {
	if h.policy.MemoryLimitFraction == 0 {
		return
	}
	if h.memory.read == nil {
		h.memory.read = readRuntimeMemory
	}
	stop, read := make(chan struct{}), h.memory.read
	h.memory.stop = stop
	h.lib.Go(func() { h.watchMemory(stop, read) })
}

func (m *memoryWatch) stopLocked() {
	if m.stop != nil {
		close(m.stop)
		m.stop = nil
	}
}

// watchMemory suspends the host while the heap is over the policy's share of the memory
// limit and, once that has lasted MemoryPressurePeriod, cancels the newest running
// instance at each check until the heap is below again, when it resumes the host.
func (h *Host) watchMemory(stop <-chan struct{}, read func() (heap, limit uint64)) {
	p := h.policy
	tick := time.NewTicker(cmpOr(p.MemoryCheckInterval, defaultMemoryCheckInterval))
	defer tick.Stop()
	var since time.Time
	pressed := false
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		heap, limit := read()
		over := limit > 0 && limit < math.MaxInt64 && float64(heap) > p.MemoryLimitFraction*float64(limit)
		switch {
		case over && !pressed:
			pressed, since = true, time.Now()
			h.suspend(pauseMemory)
		case over && time.Since(since) >= cmpOr(p.MemoryPressurePeriod, defaultMemoryPressurePeriod):
			h.revokeNewest()
		case !over && pressed:
			pressed = false
			h.resume(pauseMemory)
		}
	}
}

// revokeNewest cancels the most recently started instance not yet canceled.
func (h *Host) revokeNewest() {
	h.lock()
	var victim *instance
	for i := h.running.tail; i != nil; i = i.prev {
		if i.canceled.Load() == nil {
			victim = i
			break
		}
	}
	h.unlock()
	if victim != nil {
		victim.cancel(ResourceRevocation)
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// withMemoryReader replaces how the host reads the heap and the memory limit. It is for
// the package's tests only, which is why it is not exported.
func withMemoryReader(read func() (heap, limit uint64)) Option {
	return Option{func(h *Host) error {
		h.memory.read = read
		return nil
	}}
}

package bgtask

import (
	"cmp"
	"math"
	"runtime"
	"runtime/metrics"
	"time"
)

// memoryWatch is the memory pressure monitor: one goroutine of the host, running only when
// [Policy].MemoryLimitFraction is set, that reads the heap every MemoryCheckInterval.
type memoryWatch struct {
	stop chan struct{} // closed by Shutdown; nil when off
	// read returns the heap in use and the memory limit, and collect runs a garbage
	// collection. Tests replace them; the program cannot (see the Policy fields).
	read    func() (heap, limit uint64)
	collect func()
}

const (
	defaultMemoryPressurePeriod = 10 * time.Second
	defaultMemoryCheckInterval  = time.Second
)

// readRuntimeMemory reads the heap and the limit set with debug.SetMemoryLimit or
// GOMEMLIMIT (math.MaxInt64 when none is set). The heap counts objects that died since
// the last garbage collection: see watchMemory.
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
	m := &h.memory
	if m.read == nil {
		m.read = readRuntimeMemory
	}
	if m.collect == nil {
		m.collect = runtime.GC
	}
	m.stop = make(chan struct{})
	stop, read, collect := m.stop, m.read, m.collect
	h.lib.Go(nil, func(*job) { h.watchMemory(stop, read, collect) })
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
//
// The heap reading counts dead objects until the next garbage collection, which may not
// come for minutes in a host that is suspended and allocates little. So while the host is
// suspended for pressure, a reading over the limit is confirmed after a collection: the
// suspension ends at the first check after the pressure ends.
func (h *Host) watchMemory(stop <-chan struct{}, read func() (heap, limit uint64), collect func()) {
	p := h.policy
	tick := time.NewTicker(cmp.Or(p.MemoryCheckInterval, defaultMemoryCheckInterval))
	defer tick.Stop()
	var since time.Time
	pressed := false
	over := func() (bool, uint64, uint64) {
		heap, limit := read()
		return limit > 0 && limit < math.MaxInt64 && float64(heap) > p.MemoryLimitFraction*float64(limit), heap, limit
	}
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		isOver, heap, limit := over()
		if isOver && pressed {
			collect()
			isOver, heap, limit = over()
		}
		switch {
		case isOver && !pressed:
			pressed, since = true, time.Now()
			h.suspend(pauseMemory, heap, limit)
		case isOver && time.Since(since) >= cmp.Or(p.MemoryPressurePeriod, defaultMemoryPressurePeriod):
			h.revokeNewest(heap, limit)
		case !isOver && pressed:
			pressed = false
			h.resume(pauseMemory, heap, limit)
		}
	}
}

// revokeNewest cancels the most recently started instance not yet canceled, and reports it.
func (h *Host) revokeNewest(heap, limit uint64) {
	running := h.running()
	for k := len(running) - 1; k >= 0; k-- {
		i := running[k]
		if i.cancelAnd(ResourceRevocation, &Event{Kind: EventRevoked, Task: i.reg, InstanceID: i.id, Reason: ResourceRevocation, Heap: heap, Limit: limit}) {
			return
		}
	}
}

// withMemoryReader replaces how the host reads the heap and the memory limit, and how it
// collects garbage (nil: runtime.GC). It is for the package's tests only, which is why it
// is not exported.
func withMemoryReader(read func() (heap, limit uint64), collect func()) Option {
	return Option{func(h *Host) error {
		h.memory.read, h.memory.collect = read, collect
		return nil
	}}
}

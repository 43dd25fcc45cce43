package bgtask

import "sync/atomic"

// The host's lock guards its scheduling state. Two things make it cheaper than a plain
// mutex under load:
//
//   - An instance that finishes does not wait for the lock. It pushes itself on
//     Host.retired, a lock-free stack, and takes the lock only if it is free. Whoever
//     holds the lock retires the pushed instances: when it takes the lock (lock) and
//     again after it releases it (unlock), so that no push is left behind, and every
//     holder sees every instance that finished before it took the lock.
//   - Instances started while the lock is held are queued in Host.toLaunch and launched
//     by unlock, after the lock is released.
//
// So the scheduling code calls h.lock and h.unlock, never h.mu directly.

// lock takes the host's lock and retires the instances that finished meanwhile.
func (h *Host) lock() {
	h.mu.Lock()
	h.retireLocked()
}

// unlock releases the host's lock and launches the instances started under it. If
// instances finished meanwhile and the lock is free, it takes the lock again to retire
// them.
func (h *Host) unlock() {
	for {
		launch := h.toLaunch
		h.toLaunch = nil
		h.mu.Unlock()
		h.launchAll(launch)
		if h.retired.head.Load() == nil || !h.mu.TryLock() {
			return // nothing to retire, or the holder will
		}
		h.retireLocked()
	}
}

// retireStack is a lock-free stack of finished instances waiting to be retired.
type retireStack struct {
	head atomic.Pointer[instance]
}

func (s *retireStack) push(i *instance) {
	for {
		old := s.head.Load()
		i.retireNext = old
		if s.head.CompareAndSwap(old, i) {
			return
		}
	}
}

// retireLocked takes every pushed instance and retires them, oldest first: the stack is
// newest first, so it is reversed in place.
func (h *Host) retireLocked() {
	var oldest *instance
	for i := h.retired.head.Swap(nil); i != nil; {
		next := i.retireNext
		i.retireNext, oldest = oldest, i
		i = next
	}
	if oldest == nil {
		return
	}
	for i := oldest; i != nil; {
		next := i.retireNext
		i.retireNext = nil
		h.retireOneLocked(i)
		i = next
	}
	h.dispatchLocked()
}

// retireOneLocked frees a finished instance's registration and stops counting it as live.
func (h *Host) retireOneLocked(i *instance) {
	r := i.reg
	if r.running == i {
		r.running = nil
	}
	h.running.remove(i)
	h.live--
	if i.term != nil {
		h.terminatedLocked(i, i.term)
	}
	if h.live == 0 && h.liveZero != nil {
		close(h.liveZero)
		h.liveZero = nil
	}
}

// instList is an intrusive list of instances, oldest first: O(1) to add and remove.
type instList struct{ head, tail *instance }

func (l *instList) push(i *instance) {
	i.prev, i.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = i
	} else {
		l.head = i
	}
	l.tail = i
}

func (l *instList) remove(i *instance) {
	if i.prev != nil {
		i.prev.next = i.next
	} else if l.head == i {
		l.head = i.next
	}
	if i.next != nil {
		i.next.prev = i.prev
	} else if l.tail == i {
		l.tail = i.prev
	}
	i.prev, i.next = nil, nil
}

func (l *instList) slice(n int) []*instance {
	out := make([]*instance, 0, n)
	for i := l.head; i != nil; i = i.next {
		out = append(out, i)
	}
	return out
}

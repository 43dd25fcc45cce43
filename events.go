package bgtask

import (
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
)

// handlers is a list of event handlers, copied on write so that raising an event reads it
// with one atomic load and no allocation. The zero value is an empty list.
type handlers[T any] struct {
	mu   sync.Mutex
	list atomic.Pointer[[]*handler[T]]
}

type handler[T any] struct {
	f       func(T)
	removed atomic.Bool
}

// add appends f; remove takes it out and keeps a delivery that has not yet reached it from
// calling it. A nil f is ignored.
func (l *handlers[T]) add(f func(T)) (remove func()) {
	if f == nil {
		return func() {}
	}
	h := &handler[T]{f: f}
	l.mu.Lock()
	l.list.Store(ptr(append(slices.Clone(l.load()), h)))
	l.mu.Unlock()
	return func() {
		if h.removed.Swap(true) {
			return
		}
		l.mu.Lock()
		l.list.Store(ptr(slices.DeleteFunc(slices.Clone(l.load()), func(x *handler[T]) bool { return x == h })))
		l.mu.Unlock()
	}
}

func ptr[T any](v T) *T { return &v }

func (l *handlers[T]) load() []*handler[T] {
	if p := l.list.Load(); p != nil {
		return *p
	}
	return nil
}

// watched reports whether any handler is registered.
func (l *handlers[T]) watched() bool { return len(l.load()) > 0 }

// eventQueue holds a registration's instances that have an event to deliver, in order. One
// delivery goroutine at a time drains it: events of one registration are delivered in
// order, and a slow handler delays only its own registration's events. The goroutine exits
// when the queue is empty, so an idle registration costs none.
type eventQueue struct {
	mu       sync.Mutex
	items    []*instance
	spare    []*instance // the drained batch's array, reused so that pushing allocates nothing
	draining bool
}

// push queues i and starts a delivery goroutine if none is running.
func (q *eventQueue) push(i *instance) {
	if q.add(i) {
		r := i.reg
		r.host.lib.Go(r.drain)
	}
}

// add queues i and reports whether the caller must now run drain (one is not running).
func (q *eventQueue) add(i *instance) (start bool) {
	q.mu.Lock()
	q.items = append(q.items, i)
	start = !q.draining
	q.draining = true
	q.mu.Unlock()
	return start
}

// next returns the queued batch, giving back the previous one's array, or nil when the
// queue is empty, in which case the caller stops draining.
func (q *eventQueue) next(done []*instance) []*instance {
	clear(done)
	q.mu.Lock()
	defer q.mu.Unlock()
	if done != nil {
		q.spare = done[:0]
	}
	if len(q.items) == 0 {
		q.draining = false
		return nil
	}
	batch := q.items
	q.items, q.spare = q.spare, nil
	return batch
}

// drain delivers queued events until the queue is empty. It runs on the one goroutine that
// add told to start it.
func (r *Registration) drain() {
	var batch []*instance
	for {
		if batch = r.events.next(batch); batch == nil {
			return
		}
		for _, i := range batch {
			r.deliver(i)
		}
	}
}

// deliver raises what instance i has pending: its progress, if it changed since the last
// delivery, and, once it finished, its final progress and then its Completed event.
func (r *Registration) deliver(i *instance) {
	if i.sentCompleted {
		return
	}
	// Clear dirty before reading the value: a SetProgress after the read sets it again and
	// queues the instance again, so no value is left behind.
	i.dirty.Store(false)
	res := i.result.Load()
	p := i.progress.Load()
	if res != nil {
		p = res.Progress
	}
	if p != i.sentProgress {
		i.sentProgress = p
		raise(r, i, "Progress", &r.progress, ProgressEventArgs{InstanceID: i.id, Progress: p})
	}
	if res != nil {
		i.sentCompleted = true
		raise(r, i, "Completed", &r.completed, *res)
	}
}

// raise calls each handler in l with args. A panic in one is recovered and logged, and
// the handlers after it are still called.
//
// Handlers run on fresh goroutines, whose stacks start small: every byte of the frames
// on the way to a handler counts, since a frame too many costs a stack copy per instance
// (about 1.5 µs). So raise and call keep to the minimum, and the rare panic is logged by a
// function of its own.
func raise[T any](r *Registration, i *instance, event string, l *handlers[T], args T) {
	for _, h := range l.load() {
		if h.removed.Load() {
			continue
		}
		if err := call(h.f, args); err != nil {
			r.host.handlerPanicked(event, i, err)
		}
	}
}

// handlerPanicked logs the panic of an event handler. It is kept out of raise (see there).
//
//go:noinline
func (h *Host) handlerPanicked(event string, i *instance, err error) {
	h.logPanic(event+" handler", err, i.attrs()...)
}

// call calls f(args) and turns a panic into a *PanicError. It is protect without the
// closure, which would add a frame (see raise).
func call[T any](f func(T), args T) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	f(args)
	return nil
}

package bgtask

import (
	"github.com/google/uuid"

	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
)

// subscribers is a set of callbacks, copied on write so that reading it is one atomic load
// with no allocation: the one subscriber set of the package's handlers, OnProgress,
// OnCompleted and OnCanceled. (A condition's watchers are a watchSet: there may be many of
// them.) Its zero value is an empty set.
type subscribers[F any] struct {
	mu   sync.Mutex
	list atomic.Pointer[[]*subscriber[F]]
}

type subscriber[F any] struct {
	f       F
	removed atomic.Bool
}

// add adds f; remove takes it out, and keeps a delivery that has not yet reached it from
// calling it. remove does not wait for a call under way.
func (s *subscribers[F]) add(f F) (remove func()) {
	sub := &subscriber[F]{f: f}
	s.mu.Lock()
	s.list.Store(ptr(append(slices.Clone(s.load()), sub)))
	s.mu.Unlock()
	return func() {
		if sub.removed.Swap(true) {
			return
		}
		s.mu.Lock()
		s.list.Store(ptr(slices.DeleteFunc(slices.Clone(s.load()), func(x *subscriber[F]) bool { return x == sub })))
		s.mu.Unlock()
	}
}

func ptr[T any](v T) *T { return &v }

func (s *subscribers[F]) load() []*subscriber[F] {
	if p := s.list.Load(); p != nil {
		return *p
	}
	return nil
}

// watched reports whether the set has a subscriber.
func (s *subscribers[F]) watched() bool { return len(s.load()) > 0 }

// callEach calls call(sub.f) for each subscriber not removed, on job j, each through
// callUser as the code named what. A panic is logged, naming i if not nil, and the next
// subscriber is still called. If one calls runtime.Goexit, the rest are called on a new
// goroutine of the library when resume is set, and skipped otherwise.
func callEach[F any](h *Host, j *job, what *string, subs []*subscriber[F], i *instance, resume bool, call func(F)) {
	k := 0
	defer func() {
		if resume && k < len(subs) { // runtime.Goexit: this goroutine ends
			rest := subs[k+1:]
			h.lib.Go(j.reg, func(j *job) { callEach(h, j, what, rest, i, resume, call) })
		}
	}()
	for ; k < len(subs); k++ {
		s := subs[k]
		if s.removed.Load() {
			continue
		}
		if err := callUser(j, what, func() { call(s.f) }); err != nil {
			var id uuid.UUID
			if i != nil {
				id = i.id
			}
			h.logPanic(*what, err, j.reg, id)
		}
	}
}

// eventQueue holds a registration's instances that have an event to deliver, in order. One
// delivery goroutine at a time drains it: events of one registration are delivered in
// order, and a slow handler delays only its own registration's events. The goroutine exits
// when the queue is empty, so an idle registration costs none.
type eventQueue struct {
	mu       sync.Mutex
	items    []*instance
	draining bool
}

// add queues i and reports whether the caller must now start draining (no one is).
func (q *eventQueue) add(i *instance) (start bool) {
	q.mu.Lock()
	q.items = append(q.items, i)
	start = !q.draining
	q.draining = true
	q.mu.Unlock()
	return start
}

// next returns the queued batch, or nil when the queue is empty, in which case the caller
// stops draining.
func (q *eventQueue) next() []*instance {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		q.draining = false
		return nil
	}
	batch := q.items
	q.items = nil
	return batch
}

// queueEvent queues i's progress and starts a delivery goroutine if none runs.
func (r *Registration) queueEvent(i *instance) {
	if r.events.add(i) {
		r.host.lib.Go(r, func(j *job) { r.drain(j, nil) })
	}
}

// drain delivers batch, then the queued events until the queue is empty, on job j: the one
// goroutine that eventQueue.add told to start. If a handler calls runtime.Goexit, the other
// handlers of that event are skipped and the later events are delivered by a new goroutine,
// which takes over as the one draining.
func (r *Registration) drain(j *job, batch []*instance) {
	k := 0
	defer func() {
		if k < len(batch) { // runtime.Goexit in a handler: this goroutine ends
			rest := slices.Clone(batch[k:])
			r.host.problem("event handler called runtime.Goexit", nil, r, uuid.Nil)
			r.host.lib.Go(r, func(j *job) { r.drain(j, rest) })
		}
	}()
	for {
		for k = 0; k < len(batch); k++ {
			r.deliver(j, batch[k])
		}
		if batch = r.events.next(); batch == nil {
			return
		}
	}
}

// deliver raises what instance i has pending: its progress, if it changed since the last
// delivery, and, once it ended, its final progress and then its Completed event.
func (r *Registration) deliver(j *job, i *instance) {
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
		raise(j, &inProgressHandler, r.progress.load(), i, &ProgressEventArgs{InstanceID: i.id, Progress: p})
	}
	if res != nil {
		i.sentCompleted = true
		raise(j, &inCompletedHandler, r.completed.load(), i, res)
	}
}

// raise calls each handler of subs not removed with args, on job j. A panic is logged and
// the next handler is still called. If a handler calls runtime.Goexit, the rest are
// skipped (drain delivers the later events).
//
// Handlers most often run on the instance's own goroutine (see instance.run), whose stack
// starts at 2 KiB: each byte of the frames on the way to a handler counts, since a stack
// copy costs as much as the rest of an instance's end. BenchmarkInstanceEndToEnd measured
// 3.2 µs with a generic helper and two closures between raise and the handler, and 1.6 µs
// like this (the floor: 0.8 µs). So args come by pointer, raise calls callHandler
// directly, and a panic is logged by a function of its own.
func raise[T any](j *job, what *string, subs []*subscriber[func(T)], i *instance, args *T) {
	for _, s := range subs {
		if s.removed.Load() {
			continue
		}
		if err := callHandler(j, what, s.f, args); err != nil {
			handlerPanicked(what, i, err)
		}
	}
}

// callHandler calls f(*args) on job j, as the user code named what, and returns its panic
// as a *PanicError. It is callUser without the closure (see raise).
func callHandler[T any](j *job, what *string, f func(T), args *T) (err error) {
	j.calling.Store(what)
	defer func() {
		j.calling.Store(nil)
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	f(*args)
	return nil
}

// handlerPanicked logs the panic of an event handler; kept out of raise (see there).
//
//go:noinline
func handlerPanicked(what *string, i *instance, err error) {
	i.reg.host.logPanic(*what, err, i.reg, i.id)
}

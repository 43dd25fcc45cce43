package bgtask

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Store keeps a host's persistable registrations: a durable map from TaskID to an opaque,
// versioned record that the host encodes. The program opens and closes it; the host never
// closes it. Package boltstore has the embedded default, on a single file.
//
// A Store must be safe for concurrent use. The host calls Load once, from NewHost, and
// Apply for every change it makes durable: on the goroutine of the Register, Ensure or
// Unregister that waits for it (one such call writes those queued with it), on a timer's
// goroutine for the writes made in batches, on Shutdown's, and on a OneShot instance's
// own goroutine, before its Run, to delete its record. It never holds a lock of its own
// while it calls them, and Apply may block (a OneShot's Run waits for it meanwhile).
type Store interface {
	// Load returns every record. A record it cannot read makes it fail with an error
	// matching ErrStoreCorrupt.
	Load(ctx context.Context) (map[uuid.UUID][]byte, error)
	// Apply makes puts and deletes durable together: after a crash, all or none of them.
	// It returns only once they are durable. A TaskID in both put and del is deleted (the
	// host sends such a pair when an Unregister comes while the record is written).
	Apply(ctx context.Context, put map[uuid.UUID][]byte, del []uuid.UUID) error
}

var (
	// ErrStoreCorrupt is matched by the errors for a store, or a record in it, that cannot
	// be read: the error says which and why. Nothing is written then.
	ErrStoreCorrupt = errors.New("bgtask: store corrupt")
	// ErrNotPersistable is returned by Register and Ensure, with a store, for a
	// registration with a TaskEntryPoint whose trigger or conditions cannot be stored: a
	// CustomTrigger, a *Switch, a condition the program wrote.
	ErrNotPersistable = errors.New("bgtask: not persistable")
)

// WithStore keeps the host's persistable registrations in s: NewHost restores those it
// holds, and every registration with a TaskEntryPoint is stored before Register or Ensure
// returns (one with only a Task stays in memory). Results and time triggers' next times
// are written in batches, within half a second, and by Shutdown. A store that fails never
// makes the host lose what it holds in memory: Register and Ensure return the error,
// other writes are retried and logged, and Shutdown returns the last error. The host
// never closes s. Default: no store. While the store fails, the time triggers' next times
// are not written: after a restart, a slot that ran meanwhile may run again.
//
// A restored time trigger whose slots passed while the program was down fires its
// catch-up as soon as NewHost has restored it, with the settings it had: it may start
// before NewHost returns, before the program Ensures the registration (an Ensure's
// changes apply to the fires after) and attaches its handlers again. The program reads
// that fire's result with LastResult, or in [Host.Completions].
func WithStore(s Store) Option {
	return Option{func(h *Host) error {
		if isNil(s) {
			return invalidf("WithStore", "nil store")
		}
		h.saver = &saver{host: h, store: s, dirty: make(map[*Registration]struct{}), flushing: make(chan struct{}, 1)}
		return nil
	}}
}

// saveDelay is how long a result or a time trigger's next time may wait to be written, so
// that many are written in one transaction.
const saveDelay = 500 * time.Millisecond

// saver writes a host's records. Writes that must be durable before a call returns
// (Register, Ensure, Unregister) are grouped: while one Apply runs, the writes that come
// wait and go together in the next, so that concurrent registrations share a transaction
// (BenchmarkRegisterPersistentParallel16).
// Other writes (results, next times) mark the registration dirty, and a timer writes the
// dirty ones within saveDelay.
type saver struct {
	host  *Host
	store Store

	// flushing holds a token while a goroutine calls Apply. A channel rather than a mutex, so
	// that the writers waiting for it are durably blocked in a testing/synctest bubble.
	flushing chan struct{}

	mu      sync.Mutex
	reqs    []saveReq
	dirty   map[*Registration]struct{}
	deletes []uuid.UUID
	timer   *time.Timer // the armed timer, counted as a job of the library
	timerJ  *job
	stopped bool
	leading bool // a commit is writing the queued requests
}

type saveReq struct {
	put  map[uuid.UUID][]byte
	del  []uuid.UUID
	done chan error    // the result of the Apply that wrote it
	turn chan struct{} // the lead, handed to a waiting request
}

// commit writes put and del and returns once they are durable, or the store's error.
// The first caller leads: it writes what is queued, and again while more came meanwhile;
// the others wait for their result.
func (s *saver) commit(ctx context.Context, put map[uuid.UUID][]byte, del []uuid.UUID) error {
	q := saveReq{put, del, make(chan error, 1), make(chan struct{}, 1)}
	s.mu.Lock()
	s.reqs = append(s.reqs, q)
	lead := !s.leading
	s.leading = true
	s.mu.Unlock()
	if !lead {
		select {
		case err := <-q.done: // written by a leader, or by the timer's flush
			select {
			case <-q.turn: // handed the lead before that flush took it: pass it on
				s.handOver()
			default:
			}
			return err
		case <-q.turn: // the leader handed over: this request is still queued
		}
	}
	s.flush(ctx) // writes this request, and those queued with it
	s.handOver()
	return <-q.done
}

// handOver passes the lead to the oldest request still queued, if any: a leader writes one
// group, its own, so that under a steady stream of writes no caller leads forever.
func (s *saver) handOver() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		s.leading = false
		return
	}
	s.reqs[0].turn <- struct{}{}
}

// markDirty writes r's record within saveDelay.
func (s *saver) markDirty(r *Registration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dirty[r] = struct{}{}
	s.armLocked()
}

// deleteLater deletes the record id within saveDelay.
func (s *saver) deleteLater(id uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deletes = append(s.deletes, id)
	s.armLocked()
}

// armLocked starts the timer unless it runs or the host shut down. The timer counts as a
// goroutine of the library from now until it has written, so that Shutdown waits for it.
func (s *saver) armLocked() {
	if s.timer != nil || s.stopped {
		return
	}
	j := &job{}
	s.host.lib.begin(j)
	s.timerJ = j
	s.timer = time.AfterFunc(saveDelay, func() {
		defer s.host.lib.end(j)
		s.mu.Lock()
		s.timer, s.timerJ = nil, nil
		s.mu.Unlock()
		if err := s.flush(context.Background()); err != nil {
			s.host.emit(&Event{Kind: EventStoreError, Err: err})
			s.mu.Lock()
			s.armLocked()
			s.mu.Unlock()
		}
	})
}

// stop stops the timer and writes what is pending: what earlier writes that failed left
// too. It returns the error of that last write.
func (s *saver) stop(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	if s.timer != nil && s.timer.Stop() {
		s.host.lib.end(s.timerJ)
		s.timer, s.timerJ = nil, nil
	}
	s.mu.Unlock()
	return s.flush(ctx)
}

// flush writes every pending request and dirty record in one Apply, and returns its error.
// A failed Apply leaves the dirty records and deletes pending, to be retried; the
// requests get the error.
func (s *saver) flush(ctx context.Context) error {
	select {
	case s.flushing <- struct{}{}:
	default: // another write is under way: wait for it, or for the end of ctx
		select {
		case s.flushing <- struct{}{}:
		case <-ctx.Done(): // Shutdown's ctx ended while that write is stuck in the store
			return ctx.Err()
		}
	}
	defer func() { <-s.flushing }()
	s.mu.Lock()
	reqs, dirty, deletes := s.reqs, s.dirty, s.deletes
	s.reqs, s.dirty, s.deletes = nil, make(map[*Registration]struct{}), nil
	s.mu.Unlock()
	if len(reqs) == 0 && len(dirty) == 0 && len(deletes) == 0 {
		return nil
	}
	put := make(map[uuid.UUID][]byte)
	del := slices.Clone(deletes)
	for _, q := range reqs {
		maps.Copy(put, q.put)
		del = append(del, q.del...)
	}
	h := s.host
	h.lock()
	for r := range dirty {
		if r.unregistered || r.updating {
			continue // Unregister deletes it; Ensure's update writes it (see Host.updated)
		}
		put[r.id] = r.encodeRecordLocked()
	}
	h.unlock()
	err := s.store.Apply(ctx, put, del)
	for _, q := range reqs {
		q.done <- err
	}
	// A request handed the lead after its Apply still finds its result in done.
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		for r := range dirty {
			s.dirty[r] = struct{}{}
		}
		s.deletes = append(s.deletes, deletes...)
	}
	return err
}

// persistable reports why b cannot be stored, or nil.
func persistable(b Builder, set triggerSettings) error {
	subject := "registration " + strconv.Quote(b.Name)
	if set.kind == customKind {
		return errorf(ErrNotPersistable, subject, "a CustomTrigger")
	}
	for k, c := range b.Conditions {
		if _, ok := c.(SystemCondition); !ok {
			return errorf(ErrNotPersistable, subject, fmt.Sprintf("condition %d is a %T, not a SystemCondition", k, c))
		}
	}
	return nil
}

// restore registers the records of the host's store; NewHost calls it. Every record is
// decoded before any is registered, so that a corrupt one makes NewHost fail with nothing
// started.
func (h *Host) restore() error {
	recs, err := h.saver.store.Load(context.Background())
	if err != nil {
		return fmt.Errorf("bgtask: loading the store: %w", err)
	}
	ids := slices.Collect(maps.Keys(recs))
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	decoded := make([]*record, len(ids))
	for k, id := range ids {
		if decoded[k], err = decodeRecord(id, recs[id]); err != nil {
			return err
		}
	}
	for k, rec := range decoded {
		b := rec.builder()
		task := h.entries[rec.EntryPoint]
		if task == nil {
			task = unbound(rec.EntryPoint)
		}
		r := h.newRegistration(b, task, b.Trigger.settings())
		r.id, r.persistent, r.last = ids[k], true, rec.Last.result()
		if rec.Next != 0 {
			r.sched.next = int64(time.Unix(0, rec.Next).Sub(h.epoch))
		}
		h.watchConditions(r, r.conditions)
		h.lock()
		h.regs[r.id] = r
		r.trigger.attach(r)
		h.registeredLocked(r)
		h.unlock()
	}
	return nil
}

// unbound is the task of a restored registration whose entry point no WithEntryPoint
// bound: each of its fires completes with ErrUnknownEntryPoint, and is logged.
type unbound string

func (u unbound) Run(_ context.Context, inst BackgroundTaskInstance) error {
	err := errorf(ErrUnknownEntryPoint, "registration "+strconv.Quote(inst.Task().Name()), strconv.Quote(string(u)))
	inst.Task().host.problem("restored registration without its task", err, inst.Task(), inst.InstanceID())
	return err
}

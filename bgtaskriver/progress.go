package bgtaskriver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
)

// Progress, from a task on one replica to readers on all: SetProgress reaches the local
// OnProgress handlers at once (the core delivers it), among them the fleet's, one per
// registration that ran here; that handler hands the value to the writer of the job that
// runs the instance, which writes it to the job's output (River's JobUpdate) at most every
// progressEvery, on a goroutine of its own, so that the task never waits for Postgres.
//
// Lock order: progress.mu, then the host's lock (Lookup) or the registration's subscriber
// set (OnProgress and its remove func take its lock). A writer's mu is taken alone.

// progressEvery is the least time between two writes of one job's progress. The last value
// set is written at the latest progressEvery after the write before, and with the result
// when the instance ends.
const progressEvery = 250 * time.Millisecond

// writeTimeout bounds one progress write, so that a lost connection does not hold the end
// of the job (Work joins the writer) for longer.
const writeTimeout = 5 * time.Second

// progress routes the progress of this replica's instances to their jobs' writers. Safe
// for concurrent use; it is made by New.
type progress struct {
	client *river.Client[pgx.Tx]
	log    *slog.Logger

	mu      sync.Mutex
	hooks   map[*bgtask.Registration]func() // the remove funcs of the fleet's OnProgress handlers
	pruneAt int                             // the size of hooks at which pruneLocked looks again
	running map[uuid.UUID]tracked           // by InstanceID, while the instance runs here
}

// tracked is an instance that runs here: its registration and job, and the writer of its
// progress, made at its first progress event (most instances have none).
type tracked struct {
	reg   *bgtask.Registration
	jobID int64
	w     *progressWriter
}

// track routes the progress of instance id, of r on h, to job jobID, until finish. It adds
// the fleet's OnProgress handler to r, the first time.
func (p *progress) track(h *bgtask.Host, r *bgtask.Registration, jobID int64, id uuid.UUID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running == nil {
		p.running = make(map[uuid.UUID]tracked)
	}
	if p.hooks == nil { // also after removeHooks: River may still start a job it fetched
		p.hooks = make(map[*bgtask.Registration]func())
	}
	if p.hooks[r] == nil {
		p.pruneLocked(h)
		p.hooks[r] = r.OnProgress(p.deliver)
	}
	p.running[id] = tracked{reg: r, jobID: jobID}
}

// minPrune is the least size of hooks at which pruneLocked looks for hooks to remove.
const minPrune = 64

// pruneLocked removes the hooks of the registrations that h no longer has and that run
// nothing here, once hooks has doubled since it last looked: a replica whose program
// registers and unregisters many registrations keeps the hooks of those it has, at an
// amortized cost of O(1) per hook.
func (p *progress) pruneLocked(h *bgtask.Host) {
	if len(p.hooks) < p.pruneAt {
		return
	}
	busy := make(map[*bgtask.Registration]bool, len(p.running))
	for _, t := range p.running {
		busy[t.reg] = true
	}
	for r, remove := range p.hooks {
		if !busy[r] && !registered(h, r) {
			remove()
			delete(p.hooks, r)
		}
	}
	p.pruneAt = max(2*len(p.hooks), minPrune)
}

// finish stops routing the progress of instance id, and stops and joins its writer, if it
// has one (see progressWriter.close).
func (p *progress) finish(id uuid.UUID) {
	p.mu.Lock()
	t := p.running[id]
	delete(p.running, id)
	p.mu.Unlock()
	if t.w != nil {
		t.w.close()
	}
}

// deliver is the fleet's OnProgress handler. It runs on the registration's event goroutine
// (the core's) and does not block.
func (p *progress) deliver(e bgtask.ProgressEventArgs) {
	p.mu.Lock()
	t, ok := p.running[e.InstanceID]
	if ok && t.w == nil {
		t.w = &progressWriter{client: p.client, log: p.log, jobID: t.jobID, id: e.InstanceID}
		p.running[e.InstanceID] = t
	}
	p.mu.Unlock()
	if ok {
		t.w.set(e.Progress)
	}
}

// removeHooks removes the fleet's OnProgress handlers, for Stop.
func (p *progress) removeHooks() {
	p.mu.Lock()
	hooks := p.hooks
	p.hooks = nil
	p.mu.Unlock()
	for _, remove := range hooks {
		remove()
	}
}

// progressWriter writes the progress of one instance to its job. Its goroutine starts at
// the first value set; close stops and joins it. Safe for concurrent use.
type progressWriter struct {
	client *river.Client[pgx.Tx]
	log    *slog.Logger
	jobID  int64
	id     uuid.UUID

	mu      sync.Mutex
	value   uint32
	started bool          // the goroutine was started
	closed  bool          // close was called: set does nothing
	wake    chan struct{} // buffered 1: a value was set since the last write
	stop    chan struct{} // closed by close
	done    chan struct{} // closed when the goroutine returns
}

// set records the latest progress and wakes the goroutine, starting it the first time.
// It never blocks.
func (w *progressWriter) set(v uint32) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.value = v
	if !w.started {
		w.started = true
		w.wake, w.stop, w.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
		go w.loop()
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default: // a write is due already: it will read this value
	}
}

// close stops the goroutine, if it was started, and waits for it to return, a write under
// way included. The value set last is not written: the job's result carries it.
func (w *progressWriter) close() {
	w.mu.Lock()
	w.closed = true
	started := w.started
	w.mu.Unlock()
	if started {
		close(w.stop)
		<-w.done
	}
}

// loop is the writer's goroutine: it writes the latest value after each wake, at most
// every progressEvery, until close.
func (w *progressWriter) loop() {
	defer close(w.done)
	pace := time.NewTimer(progressEvery)
	pace.Stop() // armed after each write
	defer pace.Stop()
	for {
		select {
		case <-w.wake:
		case <-w.stop:
			return
		}
		w.write()
		pace.Reset(progressEvery)
		select {
		case <-pace.C:
		case <-w.stop:
			return
		}
	}
}

// write writes the latest value to the job's output.
func (w *progressWriter) write() {
	w.mu.Lock()
	rec := record{Instance: w.id, Progress: w.value}
	w.mu.Unlock()
	// Not the job's context: River reads the output recorded so far from a work context,
	// which Work's goroutine writes meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if _, err := w.client.JobUpdate(ctx, w.jobID, &river.JobUpdateParams{Output: rec}); err != nil {
		w.log.Warn("bgtaskriver: writing progress", slog.Int64("job_id", w.jobID), slog.String("instance", w.id.String()), slog.Any("error", err))
	}
}

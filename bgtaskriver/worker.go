package bgtaskriver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
)

// A fire's job on the replica that takes it. River calls Work on a goroutine of its own
// (one per job, at most MaxWorkers at once). Work finds the registration in this
// replica's host, holds a time fire that the fleet as a whole must hold, runs the
// instance with Host.RunInstance, and ends the job with the instance's result, or hands
// it back to River to run later or elsewhere.

// The waits of a fire that does not run now. River hands the attempt back on every snooze,
// so a fire can wait this way forever without being discarded.
const (
	// heldFirst is the first snooze of a held fire (RunInstance said ErrHeld, or another
	// replica runs the registration); each snooze after doubles it, up to heldMax, the
	// longest a held fire waits after what held it has passed.
	heldFirst = 50 * time.Millisecond
	heldMax   = time.Second
	// elsewhere is the snooze of a fire this replica cannot run now (it does not know the
	// registration, its host is shut down, the database failed), so that another replica
	// may take it.
	elsewhere = time.Second
)

// worker is the River worker of the fleet's jobs.
type worker struct {
	river.WorkerDefaults[jobArgs]
	f *Fleet
}

// NextRetry is now: a job's attempts fail only when River rescues it from a crashed
// replica, and it is then to run again at once, elsewhere.
func (w *worker) NextRetry(*river.Job[jobArgs]) time.Time { return time.Now() }

// Work runs the fire of job on this replica's host.
func (w *worker) Work(ctx context.Context, job *river.Job[jobArgs]) error {
	f := w.f
	h := f.host.Load()
	r, ok := h.Lookup(job.Args.TaskID)
	if !ok {
		return f.unknown(ctx, job)
	}
	details, err := job.Args.details()
	if err == nil && job.ID > maxJobID {
		err = fmt.Errorf("bgtaskriver: job id %d is beyond what an InstanceID holds (2^60)", job.ID)
	}
	if err != nil { // a job that this version cannot run: its result says why
		f.record(ctx, recordOf(bgtask.CompletedEventArgs{Err: err, Finished: time.Now()}))
		return river.JobCancel(err)
	}
	if job.Args.ScheduledAt != nil {
		if end, run := f.timeFire(ctx, job); !run {
			return end
		}
	}
	return f.run(ctx, h, r, job, details)
}

// unknown handles a job whose registration this replica's host does not have. If the
// store has it, a replica that Ensured it after this host started knows it: the job is
// snoozed for one to take it (every replica must Ensure the same registrations). If not,
// it was unregistered: the fire is dropped, as a held fire is by Unregister.
func (f *Fleet) unknown(ctx context.Context, job *river.Job[jobArgs]) error {
	known, err := f.store.has(ctx, job.Args.TaskID)
	if err != nil || known {
		return river.JobSnooze(elsewhere)
	}
	f.record(ctx, droppedRecord())
	return river.JobCancel(fmt.Errorf("bgtaskriver: registration %q (%s) is unregistered", job.Args.Name, job.Args.TaskID))
}

// heldWait is how long a held fire's job snoozes: heldFirst, doubled for each time it was
// snoozed before (River counts them in its metadata), up to heldMax.
func heldWait(job *river.Job[jobArgs]) time.Duration {
	var meta struct {
		Snoozes int `json:"snoozes"`
	}
	_ = json.Unmarshal(job.Metadata, &meta) // no count: the first snooze
	return min(heldFirst<<min(meta.Snoozes, 8), heldMax)
}

// run runs the fire's instance on h, and ends the job with its result or hands it back.
func (f *Fleet) run(ctx context.Context, h *bgtask.Host, r *bgtask.Registration, job *river.Job[jobArgs], details any) error {
	id := instanceID(job.ID, *job.AttemptedAt)
	runCtx, stop := runContext(ctx, h, id)
	defer stop()
	f.progress.track(h, r, job.ID, id)
	out, err := h.RunInstance(runCtx, r, id, details)
	f.progress.finish(id) // before the job's end: a progress write after it would undo its output
	switch {
	case errors.Is(err, bgtask.ErrHeld):
		return river.JobSnooze(heldWait(job))
	case errors.Is(err, bgtask.ErrHostClosed):
		return river.JobSnooze(elsewhere)
	case errors.Is(err, bgtask.ErrInvalidArgument) && !registered(h, r): // unregistered since Work found it
		return f.unknown(ctx, job)
	case err != nil:
		return err
	}
	return f.end(ctx, r, out)
}

// registered reports whether r is h's registration of its TaskID.
func registered(h *bgtask.Host, r *bgtask.Registration) bool {
	cur, ok := h.Lookup(r.TaskID())
	return ok && cur == r
}

// end ends the job of an instance that ran, with out its result. An instance canceled
// with Terminating was canceled because its replica is going away (Fleet.Stop, or
// Host.Shutdown before it): its fire runs again on another replica, unless
// Config.StopCancelsJobs (a OneShot registration's record, kept by the host for that run,
// is then deleted). Returning ctx's error when River is stopping makes River hand
// the job back, with its attempt; a snooze does the same otherwise. Any other result ends
// the job: a canceled instance's cancelled, and any other's completed, a task's error or
// panic included (a result, not a reason to run it again).
//
// The result is recorded in the job's output, but for a plain success (no error, not
// canceled, no progress), which the row itself tells (see resultOfRow): writing an output
// made Postgres spend 70% more time completing jobs in BenchmarkFleetThroughput
// (pg_stat_statements: 2.7 s against 1.6 s for 31,000 jobs).
func (f *Fleet) end(ctx context.Context, r *bgtask.Registration, out bgtask.CompletedEventArgs) error {
	if out.Canceled && out.Reason == bgtask.Terminating {
		if !f.cfg.StopCancelsJobs {
			if err := ctx.Err(); err != nil {
				return err
			}
			return river.JobSnooze(0)
		}
		if r.OneShot() { // the host kept its record for a run elsewhere, which will not come
			if err := f.store.Apply(context.WithoutCancel(ctx), nil, []uuid.UUID{r.TaskID()}); err != nil {
				f.cfg.Logger.Error("bgtaskriver: deleting a OneShot registration that ran", "task", r.TaskID(), "error", err)
			}
		}
	}
	if out.Err != nil || out.Canceled || out.Progress != 0 {
		f.record(ctx, recordOf(out))
	}
	if out.Canceled {
		var err error = &bgtask.CanceledError{Reason: out.Reason}
		if out.Err != nil {
			err = out.Err
		}
		return river.JobCancel(err)
	}
	return nil
}

// record writes rec as the job's output, with the job's end. It cannot fail but for a
// bug: a record is always JSON.
func (f *Fleet) record(ctx context.Context, rec record) {
	if err := river.RecordOutput(ctx, rec); err != nil {
		f.cfg.Logger.Error("bgtaskriver: recording a result", "error", err)
	}
}

// runContext returns the context to run instance id of h in: canceled when ctx, River's
// context of its job, is, with the *bgtask.CanceledError that RunInstance takes the
// instance's reason from: Abort for River's remote cancel (Fleet.Cancel),
// ExecutionTimeExceeded for River's timeout, Terminating for anything else (River stops:
// the replica is going away). It also cancels the instance itself, at once, with
// Host.CancelInstance: RunInstance would do it on a goroutine of its own, started when the
// returned context is canceled, a second hop that made BenchmarkFleetCancel's p50 1.26×
// River's (0.56 ms against 0.44), 0.95× without (0.45 against 0.47); RunInstance's own
// watch still covers an instance not started yet. stop releases the context.
func runContext(ctx context.Context, h *bgtask.Host, id uuid.UUID) (run context.Context, stop func()) {
	run, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	unhook := context.AfterFunc(ctx, func() {
		reason := reasonOf(context.Cause(ctx))
		h.CancelInstance(id, reason)
		cancel(&bgtask.CanceledError{Reason: reason})
	})
	return run, func() {
		unhook()
		cancel(nil)
	}
}

// reasonOf is the cancellation reason of River's cause for a job's context.
func reasonOf(cause error) bgtask.CancellationReason {
	switch {
	case errors.Is(cause, river.ErrJobCancelledRemotely):
		return bgtask.Abort
	case errors.Is(cause, context.DeadlineExceeded):
		return bgtask.ExecutionTimeExceeded
	}
	return bgtask.Terminating
}

package bgtaskriver

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// A fire's way into River: the host hands it to the dispatcher (Dispatch), which inserts
// it as a job of kind "bgtask" in the queue "bgtask", grouped with the fires of other
// goroutines (insert.go); a replica's worker takes it (worker.go).

const (
	// kind is the River job kind of every fire: River's kinds are fixed per Go type, and
	// the registration is in the args.
	kind = "bgtask"
	// queue is the River queue of the fleet's jobs.
	queue = "bgtask"
	// maxAttempts is each job's River MaxAttempts. The worker hands the attempt back
	// whenever it does not run the fire (snoozes) and when its replica stops, so an
	// attempt is used up only by a run that River rescued from a crashed replica: a job
	// whose replica crashed this many times is discarded, as a poison pill.
	maxAttempts = 25
)

// jobArgs are the args of a fire's job.
type jobArgs struct {
	TaskID uuid.UUID `json:"task_id" river:"unique"`
	Name   string    `json:"name"`
	// Args and ArgTypes are a Request's arguments (see encodeArgs); nil for a time fire.
	Args     map[string]json.RawMessage `json:"args"`
	ArgTypes map[string]string          `json:"arg_types,omitempty"`
	// ScheduledAt is a time fire's time of the grid, in UTC; nil for a Request. With the
	// TaskID it is the unique key of a time fire's job, so that the replicas' schedulers
	// insert one job per time of the grid. A Request's job has no ScheduledAt, so its key
	// is its TaskID alone.
	ScheduledAt *time.Time `json:"scheduled_at,omitempty" river:"unique"`
	// Once is a OneShot TimeTrigger's time, in UTC, in place of ScheduledAt: not part of
	// the key, so that the key is the TaskID alone and the fleet runs it once, whatever
	// time of the grid each replica's Register gave it.
	Once *time.Time `json:"once,omitempty"`
}

// Kind is River's name for the jobs of the fleet.
func (jobArgs) Kind() string { return kind }

// details returns the TriggerDetails of the instance that runs the job.
func (a *jobArgs) details() (any, error) {
	if at := cmp.Or(a.ScheduledAt, a.Once); at != nil {
		return &bgtask.TimeTriggerDetails{ScheduledAt: *at}, nil
	}
	args, err := decodeArgs(a.Args, a.ArgTypes)
	if err != nil {
		return nil, err
	}
	return &bgtask.ApplicationTriggerDetails{Arguments: args}, nil
}

var (
	// requestUnique makes a Request a duplicate while its registration has a job queued or
	// running, and only then: River's default states include completed, which would make
	// the next Request a duplicate of the last one run.
	requestUnique = river.UniqueOpts{ByArgs: true, ByState: []rivertype.JobState{
		rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
		rivertype.JobStateScheduled, rivertype.JobStateRetryable,
	}}
	// onceUnique makes a job a duplicate of any job with the same key in every state,
	// finished ones included: each time of a grid runs once, ever, and so does the one
	// fire of a OneShot registration (as long as River keeps finished jobs; see the
	// package doc).
	onceUnique = river.UniqueOpts{ByArgs: true, ByState: rivertype.JobStates()}
)

// dispatcher is the fleet's bgtask.Dispatcher.
type dispatcher struct{ f *Fleet }

// Dispatch inserts the job of a fire of r, and answers CurrentlyRunning when River skips it
// as a duplicate: r has a job queued or running (a Request), or this time of the grid
// has its job (a time fire; another replica inserted it). With wait, it then waits for the
// job's end (see Fleet.wait). It runs on the goroutine that fired, or the host's for a
// time fire (see bgtask.Dispatcher), and blocks for one insert, which it may share with
// the fires of other goroutines.
func (d dispatcher) Dispatch(ctx context.Context, r *bgtask.Registration, details any, wait bool) (bgtask.CompletedEventArgs, bgtask.ApplicationTriggerResult, error) {
	var none bgtask.CompletedEventArgs
	if err := ctx.Err(); err != nil {
		return none, bgtask.UnknownError, err
	}
	job, err := newJob(r, details)
	if err != nil {
		return none, bgtask.UnknownError, err
	}
	res, err := d.f.ins.insert(ctx, job)
	if err != nil {
		return none, bgtask.UnknownError, fmt.Errorf("bgtaskriver: inserting the job of %q: %w", r.Name(), err)
	}
	if res.UniqueSkippedAsDuplicate {
		return none, bgtask.CurrentlyRunning, nil
	}
	if !wait {
		return none, bgtask.Allowed, nil
	}
	out, err := d.f.wait(ctx, res.Job.ID)
	return out, bgtask.Allowed, err
}

// newJob returns the job of a fire of r, to insert.
func newJob(r *bgtask.Registration, details any) (*insertion, error) {
	args := jobArgs{TaskID: r.TaskID(), Name: r.Name()}
	opts := &river.InsertOpts{Queue: queue, MaxAttempts: maxAttempts}
	switch d := details.(type) {
	case *bgtask.ApplicationTriggerDetails:
		var err error
		if args.Args, args.ArgTypes, err = encodeArgs(d.Arguments); err != nil {
			return nil, err
		}
		opts.UniqueOpts = requestUnique
		if r.OneShot() {
			opts.UniqueOpts = onceUnique // other replicas still have the registration
		}
	case *bgtask.TimeTriggerDetails:
		at := d.ScheduledAt.UTC()
		// Not InsertOpts.ScheduledAt: River would insert the job as scheduled, for its
		// leader to make available within 5 s.
		args.ScheduledAt = &at
		if r.OneShot() {
			args.ScheduledAt, args.Once = nil, &at
		}
		opts.UniqueOpts = onceUnique
	default:
		return nil, fmt.Errorf("bgtaskriver: a fire of %q with details %T: only ApplicationTrigger and TimeTrigger fires travel: %w",
			r.Name(), details, bgtask.ErrInvalidArgument)
	}
	return &insertion{
		params: river.InsertManyParams{Args: args, InsertOpts: opts},
		key:    keyOf(args),
		done:   make(chan struct{}, 1),
	}, nil
}

// jobKey is what River's unique key of a job is made of: its TaskID, and a time fire's
// time (0 for a Request). Two jobs with the same key in one InsertMany would make it fail.
type jobKey struct {
	task uuid.UUID
	at   int64 // UnixNano
}

// keyOf returns the jobKey of a job with args.
func keyOf(args jobArgs) jobKey {
	k := jobKey{task: args.TaskID}
	if args.ScheduledAt != nil {
		k.at = args.ScheduledAt.UnixNano()
	}
	return k
}

// compare orders keys, as the inserter sorts its batches.
func (k jobKey) compare(o jobKey) int {
	if c := compareIDs(k.task, o.task); c != 0 {
		return c
	}
	return cmp.Compare(k.at, o.at)
}

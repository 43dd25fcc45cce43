package bgtaskriver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Reading instances from any replica: everything a replica needs is in the job rows, which
// the replica that runs a job writes (record.go, progress.go).

// Phase says where a fire's job is.
type Phase uint8

const (
	// Queued: the job waits for a replica to take it: new, held (snoozed), or handed
	// back by a replica that stopped or crashed.
	Queued Phase = iota + 1
	// Running: a replica runs its instance.
	Running
	// Finished: the job ended; Result says how.
	Finished
)

// String returns the phase's name, such as "Running".
func (p Phase) String() string {
	switch p {
	case Queued:
		return "Queued"
	case Running:
		return "Running"
	case Finished:
		return "Finished"
	}
	return "Phase(" + strconv.Itoa(int(p)) + ")"
}

// InstanceStatus is what the fleet knows of a fire and its instance, read from its job by
// [Fleet.Instance] on any replica.
type InstanceStatus struct {
	// InstanceID is the instance that Running and Finished describe: the one running, or
	// the last that ran. It differs from the InstanceID asked for when the fire was run
	// again, by another replica, after the first one's replica stopped or crashed. It is
	// uuid.Nil while Queued.
	InstanceID uuid.UUID
	TaskID     uuid.UUID
	Name       string
	Phase      Phase
	// Replica is the ID (see Config.ID) of the replica that runs or ran the instance.
	Replica string
	// Progress is the instance's last progress written to the job: within about 250 ms
	// of SetProgress while it runs (see the package doc), its last value once finished.
	Progress uint32
	// Result is the instance's result when Finished, as its Completed event had it on
	// the replica that ran it; its Err has the same text (cut at 64 KiB) and matches
	// ErrCanceled, ErrTerminated and ErrUnknownEntryPoint where the original did. For a
	// plain success (no error, not canceled, no progress), which writes no output,
	// Started and Finished are River's AttemptedAt and FinalizedAt, within milliseconds
	// of the event's.
	Result bgtask.CompletedEventArgs
}

// Instance returns the status of the fire whose instance id is (its InstanceID on any
// replica), read from its job. The error matches [ErrUnknownInstance] for an id that is not
// an InstanceID of the fleet or whose job River no longer keeps (see the package doc).
func (f *Fleet) Instance(ctx context.Context, id uuid.UUID) (InstanceStatus, error) {
	jobID, ok := jobIDOf(id)
	if !ok {
		return InstanceStatus{}, unknownInstance(id)
	}
	row, err := f.client.JobGet(ctx, jobID)
	if errors.Is(err, rivertype.ErrNotFound) || err == nil && row.Kind != kind {
		return InstanceStatus{}, unknownInstance(id)
	}
	if err != nil {
		return InstanceStatus{}, fmt.Errorf("bgtaskriver: reading instance %s: %w", id, err)
	}
	return statusOf(row)
}

// unknownInstance is the error for an id that names no instance of the fleet.
func unknownInstance(id uuid.UUID) error {
	return fmt.Errorf("%w: %s", ErrUnknownInstance, id)
}

// statusOf reads the status of a fire from its job row.
func statusOf(row *rivertype.JobRow) (InstanceStatus, error) {
	var args jobArgs
	if err := json.Unmarshal(row.EncodedArgs, &args); err != nil {
		return InstanceStatus{}, fmt.Errorf("bgtaskriver: reading the args of job %d: %w", row.ID, err)
	}
	rec, err := outputOf(row)
	if err != nil {
		return InstanceStatus{}, err
	}
	st := InstanceStatus{TaskID: args.TaskID, Name: args.Name}
	switch row.State {
	case rivertype.JobStateRunning:
		st.Phase, st.InstanceID = Running, currentInstance(row)
		if rec != nil && rec.Instance == st.InstanceID {
			st.Progress = rec.Progress
		}
	case rivertype.JobStateCompleted, rivertype.JobStateCancelled, rivertype.JobStateDiscarded:
		st.Phase, st.Result = Finished, resultOfRow(row, rec)
		st.InstanceID, st.Progress = st.Result.InstanceID, st.Result.Progress
	default:
		st.Phase = Queued
	}
	if st.InstanceID != uuid.Nil && len(row.AttemptedBy) > 0 {
		st.Replica = row.AttemptedBy[len(row.AttemptedBy)-1]
	}
	return st, nil
}

// currentInstance returns the InstanceID of the job's last fetch.
func currentInstance(row *rivertype.JobRow) uuid.UUID {
	if row.AttemptedAt == nil {
		return uuid.Nil
	}
	return instanceID(row.ID, *row.AttemptedAt)
}

// outputOf returns the record in the job's output, or nil when there is none.
func outputOf(row *rivertype.JobRow) (*record, error) {
	raw := row.Output()
	if raw == nil {
		return nil, nil
	}
	rec := new(record)
	if err := json.Unmarshal(raw, rec); err != nil {
		return nil, fmt.Errorf("bgtaskriver: reading the output of job %d: %w", row.ID, err)
	}
	return rec, nil
}

// LastResult returns the result of the registration taskID's last fire that ended, on any
// replica, read from the jobs, and false when River keeps none (see the package doc). Like
// [bgtask.Registration.LastResult], it counts the fires dropped before they started; it
// does not count the time fires coalesced into a later one.
func (f *Fleet) LastResult(ctx context.Context, taskID uuid.UUID) (bgtask.CompletedEventArgs, bool, error) {
	filter, _ := json.Marshal(map[string]uuid.UUID{"task_id": taskID}) // never fails
	params := river.NewJobListParams().
		Kinds(kind).
		Queues(queue).
		States(rivertype.JobStateCompleted, rivertype.JobStateCancelled, rivertype.JobStateDiscarded).
		Where("args @> @task_filter::jsonb", river.NamedArgs{"task_filter": string(filter)}).
		Where("metadata->'output'->>'superseded' IS NULL").
		OrderBy(river.JobListOrderByFinalizedAt, river.SortOrderDesc).
		First(1)
	res, err := f.client.JobList(ctx, params)
	if err != nil {
		return bgtask.CompletedEventArgs{}, false, fmt.Errorf("bgtaskriver: reading the last result of %s: %w", taskID, err)
	}
	if len(res.Jobs) == 0 {
		return bgtask.CompletedEventArgs{}, false, nil
	}
	st, err := statusOf(res.Jobs[0])
	return st.Result, err == nil, err
}

// Polling a job until it ends, for RequestAndWait: from pollFirst, doubling up to
// pollMax, so that a short job is seen ending within milliseconds and a long one costs a
// query every pollMax.
const (
	pollFirst = 5 * time.Millisecond
	pollMax   = 500 * time.Millisecond
)

// wait polls job jobID until it ends, and returns its result, or ctx's error when ctx
// ends first. It runs on the caller's goroutine (that of RequestAndWait).
func (f *Fleet) wait(ctx context.Context, jobID int64) (bgtask.CompletedEventArgs, error) {
	timer := time.NewTimer(pollFirst)
	defer timer.Stop()
	for d := pollFirst; ; d = min(2*d, pollMax) {
		select {
		case <-timer.C:
		case <-ctx.Done():
			return bgtask.CompletedEventArgs{}, ctx.Err()
		}
		row, err := f.client.JobGet(ctx, jobID)
		if err != nil {
			return bgtask.CompletedEventArgs{}, fmt.Errorf("bgtaskriver: waiting for job %d: %w", jobID, err)
		}
		if row.FinalizedAt != nil {
			st, err := statusOf(row)
			return st.Result, err
		}
		timer.Reset(d)
	}
}

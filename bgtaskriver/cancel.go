package bgtaskriver

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/riverqueue/river/rivertype"
)

// Cancel cancels the fire whose instance id is, from any replica: River's JobCancel of its
// job. On the replica that runs it, its instance is canceled with Abort (River's cancel
// carries no reason): its context's cause is the *bgtask.CanceledError with Abort, its
// OnCanceled handlers run, and its job ends cancelled with that result, which every
// replica reads with [Fleet.Instance] and [Fleet.LastResult]. A fire still queued (held,
// or handed back by a replica that stopped) ends at once, dropped: canceled with Abort,
// never started, and no replica raises a Completed event for it. Cancel of a fire that
// has ended does nothing.
//
// Cancel does not wait for the instance to stop: River tells its replica by a Postgres
// notification, and the instance has the host's grace period to finish. The error matches
// [ErrUnknownInstance] for an id that is not an InstanceID of the fleet or whose job River
// no longer keeps; give it ids of this fleet only (Cancel does not read the job first,
// which would cost a round trip).
func (f *Fleet) Cancel(ctx context.Context, id uuid.UUID) error {
	jobID, ok := jobIDOf(id)
	if !ok {
		return unknownInstance(id)
	}
	_, err := f.client.JobCancel(ctx, jobID)
	switch {
	case errors.Is(err, rivertype.ErrNotFound):
		return unknownInstance(id)
	case err != nil:
		return fmt.Errorf("bgtaskriver: canceling instance %s: %w", id, err)
	}
	return nil
}

package bgtasktest

import (
	"github.com/bgtask-go/bgtask"
)

// instance is the BackgroundTaskInstance the task under test receives: the host's own,
// with SetProgress recorded (every value, none coalesced) and with CancelAtProgress applied
// inside it. OnCanceled hands the handlers this instance too, so that the task sees one
// instance wherever it looks. The other methods are the host's: GetDeferral and Go are
// promoted methods, which the runtime leaves out of stacks, so the deferral sites the host
// records are still the task's own lines.
type instance struct {
	bgtask.BackgroundTaskInstance
	run *run
}

// SetProgress records p, passes it to the host and then, when p reaches the
// CancelAtProgress value, cancels the instance before returning: the task's next look at
// its context sees the cancellation, every time. Canceling from here is safe: SetProgress
// runs on the task's goroutine, where the library holds no lock.
func (i *instance) SetProgress(p uint32) {
	i.run.record(p)
	i.BackgroundTaskInstance.SetProgress(p)
	if i.run.reached(p) {
		i.run.host.CancelInstance(i.InstanceID(), i.run.cfg.atProgress.reason)
	}
}

// OnCanceled adds h, called with this instance rather than the host's.
func (i *instance) OnCanceled(h bgtask.CanceledHandler) (remove func()) {
	if h == nil {
		return i.BackgroundTaskInstance.OnCanceled(nil)
	}
	return i.BackgroundTaskInstance.OnCanceled(func(_ bgtask.BackgroundTaskInstance, reason bgtask.CancellationReason) {
		h(i, reason)
	})
}

package bgtask

import "strconv"

// CancellationReason says why an instance was canceled. The values are those of the
// Windows BackgroundTaskCancellationReason enumeration.
type CancellationReason int

// The cancellation reasons, and who raises each:
//   - Abort: [Registration.Unregister] with cancelTask true.
//   - Terminating: [Host.Shutdown].
//   - IdleTask: [Policy].IdleTimeout passed without SetProgress or Checkpoint.
//   - ConditionLoss: a condition stopped holding under Builder.CancelOnConditionLoss.
//   - ExecutionTimeExceeded: the time limit passed.
//   - ResourceRevocation: memory pressure lasted.
//   - the others: [Host.Cancel], with the reason the program chooses.
const (
	Abort                 CancellationReason = 0
	Terminating           CancellationReason = 1
	LoggingOff            CancellationReason = 2
	ServicingUpdate       CancellationReason = 3
	IdleTask              CancellationReason = 4
	Uninstall             CancellationReason = 5
	ConditionLoss         CancellationReason = 6
	SystemPolicy          CancellationReason = 7
	QuietHoursEntered     CancellationReason = 8
	ExecutionTimeExceeded CancellationReason = 9
	ResourceRevocation    CancellationReason = 10
	EnergySaver           CancellationReason = 11
)

var reasonNames = [...]string{
	"Abort", "Terminating", "LoggingOff", "ServicingUpdate", "IdleTask", "Uninstall",
	"ConditionLoss", "SystemPolicy", "QuietHoursEntered", "ExecutionTimeExceeded",
	"ResourceRevocation", "EnergySaver",
}

// String returns the reason's name, such as "ExecutionTimeExceeded", or
// "CancellationReason(N)" for a value outside the enumeration.
func (r CancellationReason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "CancellationReason(" + strconv.Itoa(int(r)) + ")"
}

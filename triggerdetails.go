package bgtask

import "time"

// ApplicationTriggerDetails is the TriggerDetails of an instance started by
// [ApplicationTrigger.Request].
type ApplicationTriggerDetails struct {
	// Arguments is a copy of the map given to Request (nil when that was nil): the task
	// may change it freely.
	Arguments map[string]any
}

// TimeTriggerDetails is the TriggerDetails of an instance started by a [TimeTrigger].
type TimeTriggerDetails struct {
	// ScheduledAt is the time the fire was due. For a catch-up fire that stands for several
	// missed ones, it is the latest of them.
	ScheduledAt time.Time
}

// SystemTriggerDetails is the TriggerDetails of an instance started by a [SystemTrigger].
type SystemTriggerDetails struct {
	Type SystemTriggerType
}

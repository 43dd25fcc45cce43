package bgtask

import (
	"fmt"
	"reflect"
	"strconv"
	"time"
)

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

// Arg returns the argument key of the [ApplicationTrigger] Request that started inst, as a
// T. The error wraps [ErrInvalidArgument] and says which of these it is: inst was not
// started by an ApplicationTrigger, the key is missing, or the value is of another type
// than T (both types are named).
func Arg[T any](inst BackgroundTaskInstance, key string) (T, error) {
	var zero T
	subject := "Arg(" + strconv.Quote(key) + ")"
	if inst == nil {
		return zero, invalidf(subject, "nil instance")
	}
	d, ok := inst.TriggerDetails().(*ApplicationTriggerDetails)
	if !ok || d == nil {
		return zero, invalidf(subject, "the instance was not started by an ApplicationTrigger (its details are %T)", inst.TriggerDetails())
	}
	v, ok := d.Arguments[key]
	if !ok {
		return zero, invalidf(subject, "no such argument")
	}
	t, ok := v.(T)
	if v == nil && canBeNil[T]() {
		return zero, nil // a nil argument, asked for as a type that has nil
	}
	if !ok {
		return zero, invalidf(subject, "the argument is of type %T, not %s", v, typeName[T]())
	}
	return t, nil
}

// canBeNil reports whether T's zero value is nil.
func canBeNil[T any]() bool {
	switch reflect.TypeFor[T]().Kind() {
	case reflect.Interface, reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
		return true
	}
	return false
}

// typeName names T, an interface type included.
func typeName[T any]() string { return fmt.Sprintf("%T", (*T)(nil))[1:] }

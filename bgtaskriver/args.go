package bgtaskriver

import (
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/bgtask-go/bgtask"
)

// The arguments of a Request travel in the job's args, as JSON, to the replica that runs
// it. JSON has one number type and no time, so an argument of another type than JSON's own
// is written with the name of its type beside it (in the args' "arg_types"), and read back
// as that type: the task reads an int with bgtask.Arg[int] on any replica, as it would
// locally.

// argType is a Go type that an argument keeps: the name written beside it, and how to
// read it back.
type argType struct {
	name   string
	goType reflect.Type
	decode func(raw json.RawMessage) (any, error)
}

// typed returns the argType of T, written as name: encoding/json decodes into a T, and
// refuses a number out of T's range.
func typed[T any](name string) argType {
	return argType{name: name, goType: reflect.TypeFor[T](), decode: func(raw json.RawMessage) (any, error) {
		var v T
		err := json.Unmarshal(raw, &v)
		return v, err
	}}
}

// argTypes are the types an argument keeps, by Go type and by name. Any other value is
// written as encoding/json writes it, and read back as encoding/json reads JSON into an
// any.
var argTypes, argTypesNamed = index(
	typed[int]("int"), typed[int8]("int8"), typed[int16]("int16"), typed[int32]("int32"), typed[int64]("int64"),
	typed[uint]("uint"), typed[uint8]("uint8"), typed[uint16]("uint16"), typed[uint32]("uint32"), typed[uint64]("uint64"),
	typed[float32]("float32"), typed[time.Time]("time"), typed[time.Duration]("duration"), typed[[]byte]("bytes"),
)

// index returns ts by Go type and by name.
func index(ts ...argType) (map[reflect.Type]argType, map[string]argType) {
	byType, byName := make(map[reflect.Type]argType, len(ts)), make(map[string]argType, len(ts))
	for _, t := range ts {
		byType[t.goType], byName[t.name] = t, t
	}
	return byType, byName
}

// encodeArgs writes args as JSON values and the types to read them back as. An argument
// that encoding/json cannot write (a func, a channel, NaN) is an error wrapping
// bgtask.ErrInvalidArgument that names it.
func encodeArgs(args map[string]any) (map[string]json.RawMessage, map[string]string, error) {
	if args == nil {
		return nil, nil, nil
	}
	values := make(map[string]json.RawMessage, len(args))
	var types map[string]string
	for k, v := range args {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, nil, fmt.Errorf("bgtaskriver: argument %q (%T) cannot travel as JSON: %v: %w", k, v, err, bgtask.ErrInvalidArgument)
		}
		values[k] = raw
		if t, ok := argTypes[reflect.TypeOf(v)]; ok {
			if types == nil {
				types = make(map[string]string)
			}
			types[k] = t.name
		}
	}
	return values, types, nil
}

// decodeArgs reads back what encodeArgs wrote. It fails on a value that is not of the
// type written beside it, or a type it does not know (written by a newer version).
func decodeArgs(values map[string]json.RawMessage, types map[string]string) (map[string]any, error) {
	if values == nil {
		return nil, nil
	}
	args := make(map[string]any, len(values))
	for k, raw := range values {
		var v any
		var err error
		if name, ok := types[k]; !ok {
			err = json.Unmarshal(raw, &v)
		} else if t, ok := argTypesNamed[name]; ok {
			v, err = t.decode(raw)
		} else {
			err = fmt.Errorf("unknown type %q", name)
		}
		if err != nil {
			return nil, fmt.Errorf("bgtaskriver: reading argument %q: %w", k, err)
		}
		args[k] = v
	}
	return args, nil
}

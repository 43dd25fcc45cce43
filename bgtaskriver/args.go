package bgtaskriver

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/bgtask-go/bgtask"
)

// The arguments of a Request travel in the job's args, as JSON, to the replica that runs
// it. JSON has one number type and no time, so an argument of another type than JSON's own
// is written with the name of its type beside it (in the args' "arg_types"), and read back
// as that type: the task reads an int with bgtask.Arg[int] on any replica, as it would
// locally.

// argType reads back the arguments of one Go type.
type argType struct {
	decode func(raw json.RawMessage) (any, error)
}

// argTypes are the types an argument keeps, by the name written beside it. Any other
// value is written as encoding/json writes it, and read back as encoding/json reads JSON
// into an any.
var argTypes = map[string]argType{
	"int":      typed[int](),
	"int8":     typed[int8](),
	"int16":    typed[int16](),
	"int32":    typed[int32](),
	"int64":    typed[int64](),
	"uint":     typed[uint](),
	"uint8":    typed[uint8](),
	"uint16":   typed[uint16](),
	"uint32":   typed[uint32](),
	"uint64":   typed[uint64](),
	"float32":  typed[float32](),
	"time":     typed[time.Time](),
	"duration": typed[time.Duration](),
	"bytes":    typed[[]byte](),
}

// typed returns the argType of T: encoding/json decodes into a T, and refuses a number
// out of T's range.
func typed[T any]() argType {
	return argType{decode: func(raw json.RawMessage) (any, error) {
		var v T
		err := json.Unmarshal(raw, &v)
		return v, err
	}}
}

// typeName is the name written beside v, or "" for a value of JSON's own types or one
// that does not keep its type.
func typeName(v any) string {
	switch v.(type) {
	case int:
		return "int"
	case int8:
		return "int8"
	case int16:
		return "int16"
	case int32:
		return "int32"
	case int64:
		return "int64"
	case uint:
		return "uint"
	case uint8:
		return "uint8"
	case uint16:
		return "uint16"
	case uint32:
		return "uint32"
	case uint64:
		return "uint64"
	case float32:
		return "float32"
	case time.Time:
		return "time"
	case time.Duration:
		return "duration"
	case []byte:
		return "bytes"
	}
	return ""
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
		if name := typeName(v); name != "" {
			if types == nil {
				types = make(map[string]string)
			}
			types[k] = name
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
		} else if t, ok := argTypes[name]; ok {
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

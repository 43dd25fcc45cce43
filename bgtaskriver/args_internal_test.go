package bgtaskriver

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// roundTrip encodes args as a job's args do, through their JSON, and decodes them back.
func roundTrip(t *testing.T, args map[string]any) map[string]any {
	t.Helper()
	values, types, err := encodeArgs(args)
	require.NoError(t, err)
	raw, err := json.Marshal(jobArgs{Args: values, ArgTypes: types})
	require.NoError(t, err)
	var back jobArgs
	require.NoError(t, json.Unmarshal(raw, &back))
	got, err := decodeArgs(back.Args, back.ArgTypes)
	require.NoError(t, err)
	return got
}

func TestArgsKeepTheirTypes(t *testing.T) {
	at := time.Date(2026, 11, 25, 8, 0, 0, 123456789, time.UTC)
	args := map[string]any{
		"int": 42, "int8": int8(-8), "int16": int16(-16), "int32": int32(-32), "int64": int64(math.MinInt64),
		"uint": uint(7), "uint8": uint8(255), "uint16": uint16(16), "uint32": uint32(32), "uint64": uint64(math.MaxUint64),
		"float32": float32(0.25), "float64": 1.5, "string": "s", "bool": true, "nil": nil,
		"time": at, "duration": 90 * time.Second, "bytes": []byte{0, 1, 255},
		"list": []any{"a", 1.0, false}, "map": map[string]any{"k": []any{}},
	}
	assert.Equal(t, args, roundTrip(t, args))
}

func TestArgsOfOtherTypesComeBackAsJSON(t *testing.T) {
	type point struct{ X, Y int }
	local := time.Date(2026, 11, 25, 9, 0, 0, 0, time.FixedZone("CET", 3600))
	got := roundTrip(t, map[string]any{"point": point{1, 2}, "ints": []int{1, 2}, "time": local})
	assert.Equal(t, map[string]any{"X": 1.0, "Y": 2.0}, got["point"])
	assert.Equal(t, []any{1.0, 2.0}, got["ints"])
	assert.True(t, local.Equal(got["time"].(time.Time)), "the same instant")
}

func TestArgsEmptyAndNil(t *testing.T) {
	assert.Nil(t, roundTrip(t, nil))
	got := roundTrip(t, map[string]any{})
	assert.NotNil(t, got)
	assert.Empty(t, got)
}

func TestArgsThatCannotTravel(t *testing.T) {
	for _, v := range []any{make(chan int), func() {}, math.NaN()} {
		_, _, err := encodeArgs(map[string]any{"x": v})
		assert.ErrorIs(t, err, bgtask.ErrInvalidArgument, "%T", v)
	}
}

func TestArgsReadBackRefusesWhatDoesNotFit(t *testing.T) {
	for _, tc := range []struct {
		raw, typ string
	}{
		{"300", "int8"},
		{"-1", "uint"},
		{`"x"`, "int"},
		{"1.5", "int"},
		{"1", "complex128"},
	} {
		_, err := decodeArgs(map[string]json.RawMessage{"x": json.RawMessage(tc.raw)}, map[string]string{"x": tc.typ})
		assert.Error(t, err, "%s as %s", tc.raw, tc.typ)
	}
}

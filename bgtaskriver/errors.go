package bgtaskriver

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bgtask-go/bgtask"
)

// ErrUnknownInstance is matched by the errors of [Fleet.Instance] and [Fleet.Cancel] for an
// id that is not an InstanceID of the fleet, or whose job River no longer keeps.
var ErrUnknownInstance = errors.New("bgtaskriver: unknown instance")

// corruptError is the error for a table that is not a store's, or a record in it that
// the store cannot read. It matches bgtask.ErrStoreCorrupt, and what its detail wraps.
type corruptError struct {
	table  string
	detail error
}

// corrupt returns a *corruptError about table, with the detail formatted, and wrapping, as
// by fmt.Errorf.
func corrupt(table, format string, args ...any) error {
	return &corruptError{table: table, detail: fmt.Errorf(format, args...)}
}

func (e *corruptError) Error() string {
	return "bgtaskriver: " + e.table + ": " + strings.TrimPrefix(bgtask.ErrStoreCorrupt.Error(), "bgtask: ") + ": " + e.detail.Error()
}

func (e *corruptError) Unwrap() []error { return []error{bgtask.ErrStoreCorrupt, e.detail} }

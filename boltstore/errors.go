package boltstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bgtask-go/bgtask"
)

var (
	// ErrLocked is matched by the error of [Open] when another Store, in this process or
	// another, has the file open and did not close it within a second.
	ErrLocked = errors.New("boltstore: file in use by another Store")
	// ErrClosed is returned by [Store.Load] and [Store.Apply] on a Store that has been
	// closed, and on the zero Store.
	ErrClosed = errors.New("boltstore: store closed")
)

// corruptError is the error for a file that is not a boltstore database, or a damaged
// one. It matches bgtask.ErrStoreCorrupt, and what its detail wraps.
type corruptError struct {
	path   string
	detail error
}

// corrupt returns a *corruptError about path, with the detail formatted, and wrapping, as
// by fmt.Errorf.
func corrupt(path, format string, args ...any) error {
	return &corruptError{path: path, detail: fmt.Errorf(format, args...)}
}

func (e *corruptError) Error() string {
	return "boltstore: " + e.path + ": " + strings.TrimPrefix(bgtask.ErrStoreCorrupt.Error(), "bgtask: ") + ": " + e.detail.Error()
}

func (e *corruptError) Unwrap() []error { return []error{bgtask.ErrStoreCorrupt, e.detail} }

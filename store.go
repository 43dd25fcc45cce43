package bgtask

import (
	"context"
	"errors"

	"github.com/google/uuid"
)

// Store keeps a host's persistable registrations: a durable map from TaskID to an opaque,
// versioned record that the host encodes. The program opens and closes it; the host never
// closes it. Package boltstore has the embedded default, on a single file.
//
// A Store must be safe for concurrent use. The host calls Load once, from NewHost, and
// Apply for every change it makes durable.
type Store interface {
	// Load returns every record. A record it cannot read makes it fail with an error
	// matching ErrStoreCorrupt.
	Load(ctx context.Context) (map[uuid.UUID][]byte, error)
	// Apply makes puts and deletes durable together: after a crash, all or none of them.
	// It returns only once they are durable.
	Apply(ctx context.Context, put map[uuid.UUID][]byte, del []uuid.UUID) error
}

var (
	// ErrStoreCorrupt is matched by the errors for a store, or a record in it, that cannot
	// be read: the error says which and why. Nothing is written then.
	ErrStoreCorrupt = errors.New("bgtask: store corrupt")
	// ErrNotPersistable is returned by Register and Ensure, with a store, for a
	// registration with a TaskEntryPoint whose trigger or conditions cannot be stored: a
	// CustomTrigger, a *Switch, a condition the program wrote.
	ErrNotPersistable = errors.New("bgtask: not persistable")
)

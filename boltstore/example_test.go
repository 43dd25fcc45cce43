package boltstore_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/bgtask-go/bgtask/boltstore"
	"github.com/google/uuid"
)

// A program opens the store once, before NewHost, passes it with bgtask.WithStore, and
// closes it after Shutdown. Here the store is used directly, as the host uses it.
func Example() {
	dir, err := os.MkdirTemp("", "boltstore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := boltstore.Open(filepath.Join(dir, "bgtask.db"))
	if err != nil {
		log.Fatal(err) // errors.Is(err, boltstore.ErrLocked): another Store has the file
	}
	ctx := context.Background()
	id := uuid.New()
	if err := store.Apply(ctx, map[uuid.UUID][]byte{id: []byte("a record")}, nil); err != nil {
		log.Fatal(err)
	}
	recs, err := store.Load(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(recs), string(recs[id]))
	if err := store.Close(); err != nil {
		log.Fatal(err)
	}
	// Output: 1 a record
}

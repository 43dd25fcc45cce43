// Package boltstore keeps a bgtask host's registrations in one file, a go.etcd.io/bbolt
// database: it is the embedded default [bgtask.Store].
//
// The program opens the store, hands it to the host, and closes it after the host has shut
// down (the host never closes it):
//
//	store, err := boltstore.Open(filepath.Join(dir, "bgtask.db"))
//	if err != nil {
//		return err // errors.Is(err, boltstore.ErrLocked): another Store has the file
//	}
//	defer store.Close()
//	host, err := bgtask.NewHost(bgtask.WithStore(store), bgtask.WithEntryPoint("sync", syncTask))
//
// # The file
//
// The file is created with mode 0600. It holds two buckets: "registrations" maps the 16
// bytes of each TaskID to the record the host encoded, and "meta" holds the key "format"
// with the value "bgtask-boltstore/1", written when the file is created. Every
// [Store.Apply] is one bbolt transaction, synced to disk before Apply returns, so after a
// crash the file holds all of an Apply's puts and deletes or none of them.
//
// One Store at a time has the file open: bbolt holds an exclusive lock (flock) on it while
// it is open, and a second [Open] of the file, in this process or another, waits up to a
// second for it and then fails with an error matching [ErrLocked].
//
// # Damaged and foreign files
//
// [Open] checks the file before it opens it for writing: the format marker, that the file
// holds every page the database has, and every key of the registrations bucket. A file that is not a boltstore database,
// or one that is damaged, makes Open (or [Store.Load], for damage it finds later) fail with
// an error matching [bgtask.ErrStoreCorrupt] that says what is wrong, and nothing is
// written to it: move it aside to start afresh, or keep it to recover what it holds. A
// panic or a memory fault while bbolt reads a damaged file is recovered and reported the
// same way; the library itself never panics.
//
// A file of zero length, or a bbolt database holding no bucket at all (what a crash while
// Open was creating the file leaves), is taken as a new store.
package boltstore

//go:build race

package boltstore

// raceEnabled: the race detector's checkptr instrumentation is on. It turns bbolt's reads
// of some damaged pages into fatal errors that no recover catches, an artifact of the
// instrumentation: a build without it returns ErrStoreCorrupt for them.
const raceEnabled = true

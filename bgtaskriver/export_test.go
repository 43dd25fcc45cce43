package bgtaskriver

import "github.com/riverqueue/river"

// JobsCompleted returns River's events of the jobs this replica completed, which River
// sends once it has written their end, and the func that stops them and closes the
// channel. River drops the events that do not fit in size. For the benchmarks.
func (f *Fleet) JobsCompleted(size int) (<-chan *river.Event, func()) {
	return f.client.SubscribeConfig(&river.SubscribeConfig{ChanSize: size, Kinds: []river.EventKind{river.EventKindJobCompleted}})
}

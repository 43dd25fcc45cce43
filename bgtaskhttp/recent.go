package bgtaskhttp

import (
	"sync"

	"github.com/bgtask-go/bgtask"
)

// maxRecent is how many completions the state lists.
const maxRecent = 100

// recentList keeps the last maxRecent completions, in a ring. add is called by the host's
// event stream, on a goroutine of the host, once per completion: it only copies the event,
// and the requests, which are rarer, describe it. Both hold mu only to copy. Its zero
// value is an empty list.
type recentList struct {
	mu    sync.Mutex
	ring  [maxRecent]completion
	next  int    // where the next completion goes
	count int    // how many the ring holds, up to maxRecent
	added uint64 // how many were ever added
}

type completion struct {
	reg  *bgtask.Registration
	args bgtask.CompletedEventArgs
}

// add records the completion that e reports.
func (l *recentList) add(e bgtask.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = completion{e.Task, e.Result}
	l.next = (l.next + 1) % maxRecent
	l.count = min(l.count+1, maxRecent)
	l.added++
}

// total returns how many completions were ever added: when it changed, so did the state.
func (l *recentList) total() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.added
}

// newestFirst describes the completions recorded, newest first.
func (l *recentList) newestFirst() []result {
	l.mu.Lock()
	last := make([]completion, l.count)
	for k := range last {
		last[k] = l.ring[(l.next-1-k+maxRecent)%maxRecent]
	}
	l.mu.Unlock()
	out := make([]result, len(last))
	for k, c := range last {
		out[k] = resultOf(c.reg, c.args) // outside the lock: Err.Error is the program's code
	}
	return out
}

package bgtask

import (
	"context"
	"sync"
)

// tracker counts the goroutines the library starts, so that Shutdown can wait for them
// with a deadline. Its zero value is ready to use.
type tracker struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to zero; made by wait
}

func (t *tracker) add() {
	t.mu.Lock()
	t.n++
	t.mu.Unlock()
}

func (t *tracker) done() {
	t.mu.Lock()
	t.n--
	if t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
	t.mu.Unlock()
}

// Go runs f on a new goroutine, counted until f returns.
func (t *tracker) Go(f func()) {
	t.add()
	go func() {
		defer t.done()
		f()
	}()
}

// wait returns nil once no counted goroutine runs, or ctx's error if ctx ends first.
func (t *tracker) wait(ctx context.Context) error {
	t.mu.Lock()
	if t.n == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

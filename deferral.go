package bgtask

import (
	"math"
	"sync/atomic"
	"unsafe"
)

// An instance's reference count packs two things into one int64, so that one atomic
// operation sees both: runRef while Run has not returned, plus one for each deferral not
// yet completed. The instance finishes when the count drops to zero. Termination swaps in
// deadRefs, a value so far below zero that no number of late Completes or GetDeferrals can
// bring it back to zero or above.
const (
	runRef   = int64(1) << 32
	deadRefs = math.MinInt64 / 2
)

// Deferral keeps an instance from finishing after its Run returns, until Complete is
// called: Run takes one with [BackgroundTaskInstance.GetDeferral] before it hands work to
// another goroutine, and that goroutine calls Complete when the work is done.
//
// A Deferral is safe for concurrent use. Its zero value is inert: Complete does nothing.
type Deferral struct {
	// inst is the *instance, swapped to nil by the first Complete so that a second one
	// finds nothing to release: idempotence and the release in one atomic operation, in
	// an 8-byte object. It is an unsafe.Pointer rather than an atomic.Pointer so that
	// GetDeferral can set it in the composite literal, without an atomic store.
	inst unsafe.Pointer
}

// Complete releases the deferral. Once Run has returned and every deferral is complete,
// the instance finishes and its Completed event is raised. Complete may be called from any
// goroutine; calls after the first do nothing, as does Complete on a deferral taken after
// the instance had finished or after it was terminated. Complete does not wait for the
// Completed event.
func (d *Deferral) Complete() {
	if i := (*instance)(atomic.SwapPointer(&d.inst, nil)); i != nil {
		i.release(1, false)
	}
}

// inertDeferral is handed out once an instance has finished; Complete on it does nothing.
var inertDeferral = new(Deferral)

// deferralSlab holds deferrals allocated together: taking one is an atomic increment of
// next, and an allocation only every slabSize deferrals. Each slot's inst is set when the
// slab is made, so handing one out writes nothing. A slab lives as long as any of its
// deferrals is referenced (its 8 slots cost 72 bytes).
type deferralSlab struct {
	ds   [slabSize]Deferral
	next atomic.Int32 // next slot to hand out; slabSize or more when used up
}

const slabSize = 8

// deferral takes a reference for a new deferral, or returns the inert one when the
// instance has finished. The increment is optimistic: a count that was zero or below
// belongs to a finished instance, so the increment is undone. A GetDeferral racing with
// that undo may get a live-looking deferral of a finished instance; its Complete is
// harmless because finishing happens once (instance.finished).
func (i *instance) deferral() *Deferral {
	if i.refs.Add(1) <= 1 {
		i.refs.Add(-1)
		return inertDeferral
	}
	for {
		if s := i.slab.Load(); s != nil {
			if k := s.next.Add(1) - 1; k < slabSize {
				return &s.ds[k]
			}
		}
		i.refill()
	}
}

// refill replaces a used-up slab. The lock makes concurrent GetDeferrals that all found
// the slab used up make one new slab between them.
func (i *instance) refill() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if s := i.slab.Load(); s != nil && s.next.Load() < slabSize {
		return // another goroutine refilled it
	}
	s := new(deferralSlab)
	for k := range s.ds {
		s.ds[k].inst = unsafe.Pointer(i)
	}
	i.slab.Store(s)
}

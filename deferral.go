package bgtask

import (
	"math"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"
)

// An instance's reference count is the one word that says whether it has ended. It counts
// runRef while Run has not returned, plus one for each deferral not yet completed:
//
//	refs > 0   running: Run, or a deferral, holds it
//	refs == 0  finished: the decrement that reached zero ended it, exactly once
//	refs < 0   terminated: terminate swapped in deadRefs, so far below zero that no
//	           number of late Completes brings it back to zero
//
// A deferral is taken only by a compare-and-swap from a positive count, so nothing revives
// an instance that has ended, and taking a deferral cannot race with the end.
const (
	runRef   = int64(1) << 32
	deadRefs = math.MinInt64 / 2
)

// Deferral keeps an instance from finishing after its Run returns, until Complete is
// called: Run takes one with [BackgroundTaskInstance.GetDeferral] before it hands work to
// another goroutine, and that goroutine calls Complete when the work is done.
//
// A Deferral is safe for concurrent use. It must not be copied after first use (go vet
// says so); a copy's Complete completes the deferral it was copied from. Its zero value
// and a nil *Deferral are inert: Complete does nothing.
type Deferral struct {
	_ noCopy
	// self is the deferral itself until Complete swaps it to nil: idempotence in one atomic
	// operation, in a 16-byte object. A copy's self is the original, so that the copy
	// completes the original. It is an unsafe.Pointer rather than an atomic.Pointer so that
	// the deferral is made without an atomic store.
	self unsafe.Pointer
	inst *instance // nil for an inert deferral
}

// deferralSite is what WithDeferralSites records of a deferral. The instance keeps the
// outstanding ones in a list, under its lock.
type deferralSite struct {
	d          *Deferral
	pc         uintptr // GetDeferral's or Go's caller
	taken      time.Time
	goFunc     bool
	prev, next *deferralSite
}

// noCopy makes go vet's copylocks check report copies of the struct that holds it.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

// Complete releases the deferral. Once Run has returned and every deferral is complete,
// the instance finishes and its Completed event is raised. Complete may be called from any
// goroutine; calls after the first do nothing, as does Complete on a deferral taken after
// the instance had finished or after it was terminated. Complete does not wait for the
// Completed event.
func (d *Deferral) Complete() {
	if d == nil {
		return
	}
	o := (*Deferral)(atomic.LoadPointer(&d.self)) // d itself, or the original of a copy
	if o == nil || o.inst == nil || atomic.SwapPointer(&o.self, nil) == nil {
		return // inert, or completed before
	}
	if o.inst.sites != nil {
		o.inst.untrack(o)
	}
	o.inst.release(1, false)
}

// inertDeferral is handed out once an instance has ended; Complete on it does nothing.
var inertDeferral = new(Deferral)

// deferral takes a reference for a new deferral, or returns nil when the instance has
// ended. skip is how many frames above deferral the site to record is.
func (i *instance) deferral(goFunc bool, skip int) *Deferral {
	for {
		n := i.refs.Load()
		if n <= 0 {
			return nil
		}
		if i.refs.CompareAndSwap(n, n+1) {
			break
		}
	}
	d := &Deferral{inst: i}
	d.self = unsafe.Pointer(d)
	if i.sites != nil {
		var pc [1]uintptr
		runtime.Callers(skip+2, pc[:])
		i.track(&deferralSite{d: d, pc: pc[0], taken: time.Now(), goFunc: goFunc})
	}
	return d
}

// track adds s to the instance's outstanding deferrals, newest last. i.sites is the head
// of their ring, made with the instance when the host records sites.
func (i *instance) track(s *deferralSite) {
	i.mu.Lock()
	s.prev, s.next = i.sites.prev, i.sites
	s.prev.next, i.sites.prev = s, s
	i.mu.Unlock()
}

// untrack takes d's site out of the ring. It looks from the newest: deferrals are most
// often completed in the reverse order they were taken.
func (i *instance) untrack(d *Deferral) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for s := i.sites.prev; s != i.sites; s = s.prev {
		if s.d == d {
			s.prev.next, s.next.prev = s.next, s.prev
			return
		}
	}
}

// DeferralInfo describes an outstanding deferral.
type DeferralInfo struct {
	// Site is "file.go:42", where GetDeferral or Go was called, or "" when
	// [WithDeferralSites] is off.
	Site string
	// Taken is when the deferral was taken; zero when WithDeferralSites is off.
	Taken time.Time
	// Go is whether the deferral is held by a func started with Go, until it returns.
	Go bool
}

// deferrals lists the outstanding deferrals, oldest first, given the reference count and
// the number of Go funcs running. Without sites only their number and kinds are known.
func (i *instance) deferrals(refs int64, goRunning int) []DeferralInfo {
	if i.sites != nil {
		i.mu.Lock()
		defer i.mu.Unlock()
		var ds []DeferralInfo
		for s := i.sites.next; s != i.sites; s = s.next {
			ds = append(ds, DeferralInfo{Site: siteOf(s.pc), Taken: s.taken, Go: s.goFunc})
		}
		return ds
	}
	n := int(max(refs%runRef, 0))
	goRunning = min(goRunning, n)
	ds := make([]DeferralInfo, n)
	for k := n - goRunning; k < n; k++ {
		ds[k].Go = true
	}
	return ds
}

// siteOf returns "file.go:42" for the call at pc.
func siteOf(pc uintptr) string {
	f, _ := runtime.CallersFrames([]uintptr{pc}).Next()
	file := f.File
	for k := len(file) - 1; k >= 0; k-- {
		if file[k] == '/' {
			file = file[k+1:]
			break
		}
	}
	return file + ":" + strconv.Itoa(f.Line)
}

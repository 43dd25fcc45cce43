package bgtask

// Completion is one completion of a host: an instance that finished or was terminated, or
// a fire dropped before it started, as [Host.Completions] lists it.
type Completion struct {
	Task *Registration
	CompletedEventArgs
}

// maxCompletions is how many completions a host keeps for Completions.
const maxCompletions = 100

// completions is the ring of a host's last completions, guarded by the host's lock. It is
// filled where the last result of a registration is set, under the lock already held
// there, so that a dashboard lists the last completions without subscribing to every one
// (a subscriber costs each instance a delivery on another goroutine: see
// BenchmarkInstanceEndToEndSubscribed).
type completions struct {
	ring  [maxCompletions]Completion
	next  int    // where the next one goes
	total uint64 // how many there were
}

func (c *completions) add(r *Registration, res *CompletedEventArgs) {
	c.ring[c.next] = Completion{r, *res}
	c.next = (c.next + 1) % maxCompletions
	c.total++
}

// Completions returns the host's last completions, newest first, at most 100: those of its
// instances and of the fires dropped before they started, with the registration of each
// (whose Completed event they are), in the order they were retired. total is how many
// there were since NewHost: when it did not change, neither did the list. It takes the
// host's lock while it copies them. The list is not stored: it starts empty with each
// NewHost, and with a Dispatcher it holds this process's completions only.
func (h *Host) Completions() (last []Completion, total uint64) {
	h.lock()
	defer h.unlock()
	c := &h.completed
	n := int(min(c.total, maxCompletions))
	last = make([]Completion, n)
	for k := range last {
		last[k] = c.ring[(c.next-1-k+maxCompletions)%maxCompletions]
	}
	return last, c.total
}

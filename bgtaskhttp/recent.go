package bgtaskhttp

// recent describes the host's last completions (bgtask.Host.Completions), newest first.
// The host keeps them itself, under the lock it already holds when an instance ends, so
// that the page costs the host's instances nothing: a subscription to every completion
// would cost each a delivery on another goroutine.
func (h *handler) recent() []result {
	last, _ := h.host.Completions()
	out := make([]result, len(last))
	for k, c := range last {
		out[k] = resultOf(c.Task, c.CompletedEventArgs) // Err.Error is the program's code: outside the host's lock
	}
	return out
}

// completed returns how many completions the host had: when it changed, so did the state.
func (h *handler) completed() uint64 {
	_, total := h.host.Completions()
	return total
}

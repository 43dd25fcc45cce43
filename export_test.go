package bgtask

// WarmUp is warmUp, for the benchmarks of package bgtask_test.
var WarmUp = warmUp

// UpdateForTest is what Ensure does once its scan found r: it updates r to b. It lets a
// test put an Unregister between the scan and the update.
func UpdateForTest(h *Host, r *Registration, b Builder) error {
	task, set, err := h.check(b)
	if err != nil {
		return err
	}
	return h.update(r, b, task, set)
}

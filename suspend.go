package bgtask

func (h *Host) suspendedLocked() bool { return false }

func (h *Host) waitResumed(i *instance) {}

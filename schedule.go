package bgtask

type schedState struct{}

func (h *Host) stopSchedulerLocked() {}

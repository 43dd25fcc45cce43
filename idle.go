package bgtask

func (h *Host) startIdleTimer(i *instance) {}

func (h *Host) touch(i *instance) {}

package bgtask

import (
	"slices"
	"strconv"
)

// SystemTriggerType is a system event that a [SystemTrigger] waits for and that
// [Host.Signal] raises. The values are those of the Windows SystemTriggerType enumeration.
type SystemTriggerType int

// The system trigger types.
const (
	SystemTriggerUserPresent              SystemTriggerType = 2
	SystemTriggerUserAway                 SystemTriggerType = 3
	SystemTriggerNetworkStateChange       SystemTriggerType = 4
	SystemTriggerInternetAvailable        SystemTriggerType = 6
	SystemTriggerSessionConnected         SystemTriggerType = 7
	SystemTriggerServicingComplete        SystemTriggerType = 8
	SystemTriggerTimeZoneChange           SystemTriggerType = 11
	SystemTriggerBackgroundWorkCostChange SystemTriggerType = 13
	SystemTriggerPowerStateChange         SystemTriggerType = 14
)

var systemTriggerNames = map[SystemTriggerType]string{
	SystemTriggerUserPresent:              "UserPresent",
	SystemTriggerUserAway:                 "UserAway",
	SystemTriggerNetworkStateChange:       "NetworkStateChange",
	SystemTriggerInternetAvailable:        "InternetAvailable",
	SystemTriggerSessionConnected:         "SessionConnected",
	SystemTriggerServicingComplete:        "ServicingComplete",
	SystemTriggerTimeZoneChange:           "TimeZoneChange",
	SystemTriggerBackgroundWorkCostChange: "BackgroundWorkCostChange",
	SystemTriggerPowerStateChange:         "PowerStateChange",
}

// String returns the type's name without its prefix, such as "InternetAvailable", or
// "SystemTriggerType(N)" for a value that is not one of the constants.
func (t SystemTriggerType) String() string {
	if s, ok := systemTriggerNames[t]; ok {
		return s
	}
	return "SystemTriggerType(" + strconv.Itoa(int(t)) + ")"
}

// SystemTrigger starts its registrations' tasks when the program reports a system event
// with [Host.Signal]. A fire while the registration's instance runs, the host is suspended
// or a condition does not hold is held, and several held fires start one instance.
// Register reads the fields; changing them later does not change the registrations made.
type SystemTrigger struct {
	Type    SystemTriggerType
	OneShot bool // unregister each registration when its first instance starts
}

func (t *SystemTrigger) attach(r *Registration) {
	h := r.host
	if h.system == nil {
		h.system = make(map[SystemTriggerType][]*Registration)
	}
	r.sysType = t.Type // the program may change t later
	r.sysIndex = len(h.system[t.Type])
	h.system[t.Type] = append(h.system[t.Type], r)
}

func (t *SystemTrigger) detach(r *Registration) {
	h := r.host
	regs := h.system[r.sysType]
	last := len(regs) - 1
	regs[r.sysIndex] = regs[last]
	regs[r.sysIndex].sysIndex = r.sysIndex
	regs[last] = nil
	h.system[r.sysType] = regs[:last]
}

func (t *SystemTrigger) validate(*Policy) error {
	if _, ok := systemTriggerNames[t.Type]; !ok {
		return invalidf("SystemTrigger with unknown Type %v", t.Type)
	}
	return nil
}

func (t *SystemTrigger) oneShot() bool { return t.OneShot }
func (t *SystemTrigger) isNil() bool   { return t == nil }

// Signal reports the system event t: every registration with a [SystemTrigger] of that
// type fires (or has its fire held, see SystemTrigger). It does not wait for the tasks.
// Signal on a shut-down host, or with a type that is not one of the constants, does
// nothing.
func (h *Host) Signal(t SystemTriggerType) {
	h.lock()
	defer h.unlock()
	if !h.closed {
		details := &SystemTriggerDetails{Type: t}
		// fireLocked may unregister a OneShot registration, which changes the slice.
		for _, r := range slices.Clone(h.system[t]) {
			h.fireLocked(r, details, false)
		}
	}
}

// SystemConditionType is a system state that a [SystemCondition] requires. The values are
// those of the Windows SystemConditionType enumeration.
type SystemConditionType int

// The system condition types. Until [Host.SetCondition] says otherwise, the positive ones
// hold (UserPresent, InternetAvailable, SessionConnected, FreeNetworkAvailable,
// BackgroundWorkCostNotHigh) and their negations do not.
const (
	SystemConditionUserPresent               SystemConditionType = 1
	SystemConditionUserNotPresent            SystemConditionType = 2
	SystemConditionInternetAvailable         SystemConditionType = 3
	SystemConditionInternetNotAvailable      SystemConditionType = 4
	SystemConditionSessionConnected          SystemConditionType = 5
	SystemConditionSessionDisconnected       SystemConditionType = 6
	SystemConditionFreeNetworkAvailable      SystemConditionType = 7
	SystemConditionBackgroundWorkCostNotHigh SystemConditionType = 8
)

var systemConditionNames = [...]string{"", "UserPresent", "UserNotPresent", "InternetAvailable",
	"InternetNotAvailable", "SessionConnected", "SessionDisconnected", "FreeNetworkAvailable",
	"BackgroundWorkCostNotHigh"}

// String returns the type's name without its prefix, such as "InternetAvailable", or
// "SystemConditionType(N)" for a value that is not one of the constants.
func (c SystemConditionType) String() string {
	if c.valid() {
		return systemConditionNames[c]
	}
	return "SystemConditionType(" + strconv.Itoa(int(c)) + ")"
}

func (c SystemConditionType) valid() bool {
	return c >= SystemConditionUserPresent && c <= SystemConditionBackgroundWorkCostNotHigh
}

// negation returns the type that always has the opposite value, if c has one.
func (c SystemConditionType) negation() (SystemConditionType, bool) {
	if c > SystemConditionSessionDisconnected {
		return 0, false
	}
	if c%2 == 1 {
		return c + 1, true
	}
	return c - 1, true
}

// SystemCondition is a [Condition] on the system state of the host it is registered
// with, set by [Host.SetCondition]. It is used as a plain value.
type SystemCondition struct {
	Type SystemConditionType
}

// Satisfied reports whether the condition holds on h.
func (c SystemCondition) Satisfied(h *Host) bool {
	h.sysMu.Lock()
	defer h.sysMu.Unlock()
	return h.systemConditionLocked(c.Type)
}

// Watch calls changed after each [Host.SetCondition] on h that changes the condition,
// on the goroutine that called SetCondition.
func (c SystemCondition) Watch(h *Host, changed func()) (stop func()) {
	h.sysMu.Lock()
	defer h.sysMu.Unlock()
	if h.sysWatch == nil {
		h.sysWatch = make(map[SystemConditionType]map[*func()]struct{})
	}
	if h.sysWatch[c.Type] == nil {
		h.sysWatch[c.Type] = make(map[*func()]struct{})
	}
	p := &changed
	h.sysWatch[c.Type][p] = struct{}{}
	return func() {
		h.sysMu.Lock()
		delete(h.sysWatch[c.Type], p)
		h.sysMu.Unlock()
	}
}

func (h *Host) systemConditionLocked(c SystemConditionType) bool {
	if v, ok := h.sysState[c]; ok {
		return v
	}
	negative := c <= SystemConditionSessionDisconnected && c%2 == 0
	return !negative
}

// SetCondition sets whether the system condition c holds on this host, and its negation
// (UserPresent and UserNotPresent, InternetAvailable and InternetNotAvailable,
// SessionConnected and SessionDisconnected) to the opposite. Registrations waiting on it
// start or, with CancelOnConditionLoss, are canceled before SetCondition returns;
// SetCondition does not wait for those instances. A type that is not one of the
// constants is logged and otherwise ignored.
func (h *Host) SetCondition(c SystemConditionType, satisfied bool) {
	if !c.valid() {
		h.log.Warn("bgtask: SetCondition with an unknown type ignored", "type", c.String())
		return
	}
	h.sysMu.Lock()
	if h.sysState == nil {
		h.sysState = make(map[SystemConditionType]bool)
	}
	var notify []func()
	set := func(c SystemConditionType, v bool) {
		if h.systemConditionLocked(c) != v {
			for f := range h.sysWatch[c] {
				notify = append(notify, *f)
			}
		}
		h.sysState[c] = v
	}
	set(c, satisfied)
	if n, ok := c.negation(); ok {
		set(n, !satisfied)
	}
	h.sysMu.Unlock()
	for _, f := range notify {
		f()
	}
}

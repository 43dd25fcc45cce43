package bgtask

import "strconv"

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

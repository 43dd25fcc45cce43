// Package bgtask runs background work inside a Go program with the lifecycle of Windows
// background tasks: work that reports progress, survives cancellation cleanly and never
// loses track of its asynchronous operations.
//
// A [Host] owns registrations. [Host.Register] turns a [Builder] (a name, a
// [BackgroundTask], a [Trigger] and optional [Condition]s) into a [Registration]. When the
// trigger fires and the conditions hold, the host starts an instance: it calls the task's
// Run on a new goroutine with a [BackgroundTaskInstance], through which the task reports
// progress, takes deferrals, learns of its cancellation and starts goroutines of its own.
//
// # Lifecycle
//
// An instance finishes exactly once, when Run has returned and every [Deferral] it took is
// complete; then its context ends (with [ErrFinished] as its cause) and the registration's
// Completed event is raised with its result. At most one instance of a registration runs
// at a time. Cancellation is cooperative: the instance's context is canceled with a
// [*CanceledError] as its cause, the handlers added with OnCanceled run, and the instance
// has [Policy].GracePeriod to finish. If it has not by then, it is terminated: reported
// with a [*TerminatedError] that says what was left running (with [WithDeferralSites], where
// each deferral was taken), its deferrals become inert, and the registration is free again.
// A panic in Run, in a func given to Go, or in a handler is recovered: in task code it
// becomes the instance's result as a [*PanicError]; in a handler it is logged.
//
// Every accepted fire ends in exactly one Completed event: its instance's, or, for a fire
// held and then dropped by Unregister or Shutdown, one that says so.
// [ApplicationTrigger.RequestAndWait] waits for it. [Host.Instances] lists the running
// instances with their state and outstanding deferrals, and [Host.CancelInstance] cancels
// one.
//
// # Triggers, conditions and policy
//
// [ApplicationTrigger] fires when the program calls Request, with arguments (read them
// with [Arg]);
// [TimeTrigger] fires periodically on a fixed grid; [SystemTrigger] fires on
// [Host.Signal]; [CustomTrigger] fires when the program's own code says so. A fire
// while the registration's instance runs, the host is suspended, a condition does not
// hold, or [Policy].MaxConcurrent is reached, is held and coalesced: it starts once, as
// soon as it can (a Request is refused instead while the instance runs or the host is
// suspended). [Policy] limits execution time, cancels idle instances, and suspends the
// host under memory pressure.
//
// # Goroutines and callbacks
//
// Every goroutine the host starts is joined by [Host.Shutdown], but for those of a
// terminated instance, which Go cannot stop: Shutdown names them in its [*ShutdownError]. Event handlers
// (OnProgress, OnCompleted) run on a goroutine of the library, one event at a time per
// registration, and may block without blocking a task or another registration's events.
// Canceled handlers run on a goroutine of the library too. No handler is called while a
// lock of the library is held.
package bgtask

// Package bgtaskhttp serves a live view of a [bgtask.Host] over HTTP: a page that lists
// the registrations, the running instances with their progress and outstanding
// deferrals, and the last completions, and the JSON and event stream it is built on.
//
// It is mounted like net/http/pprof, under a prefix of the program's choosing:
//
//	mux.Handle("/debug/bgtask/", http.StripPrefix("/debug/bgtask", bgtaskhttp.New(host)))
//
// # Routes
//
// Relative to the mount:
//
//   - GET /: the page. Its first response is rendered on the server, so it shows without
//     JavaScript; then it updates itself from GET api/events, without reloading. It loads
//     nothing from elsewhere, and every name and error on it is escaped, on the server as
//     in the browser.
//   - GET /api/state: the state, as JSON (below).
//   - GET /api/events: a text/event-stream whose every message's data is the state, sent
//     when it changed, at most 4 times a second.
//   - POST /api/instances/{id}/cancel: cancels the instance with [bgtask.Abort]: 204 when
//     it is canceled (now, or already before), 404 for an unknown or finished instance,
//     403 unless [AllowCancel] was given or when the request is cross-site, as
//     [http.CrossOriginProtection] judges it.
//
// Any other method on a route is answered 405, any other path 404.
//
// # The state
//
//	{
//	  "registrations": [{"task_id": "…", "name": "…", "trigger": "TimeTrigger every 15m0s",
//	                     "conditions": ["InternetAvailable"], "running": ["<instance id>"],
//	                     "last_result": null}],
//	  "instances": [{"instance_id": "…", "task_id": "…", "name": "…", "state": "Running",
//	                 "reason": "", "started": "RFC 3339", "progress": 40, "suspended_count": 0,
//	                 "deferrals": [{"site": "sync.go:42", "taken": "RFC 3339", "go": false}]}],
//	  "recent": [{"instance_id": "…", "task_id": "…", "name": "…", "started": "…",
//	              "finished": "…", "error": "", "canceled": false, "reason": "", "progress": 100}]
//	}
//
// Registrations are sorted by name, as [bgtask.Host.AllTasks] returns them; instances are
// oldest first, as [bgtask.Host.Instances] returns them; recent holds the last 100
// completions, newest first, and last_result has the same shape, or is null before the
// registration's first completion. Times are RFC 3339 in UTC, with milliseconds, or ""
// when there is none: a fire dropped before it started has no start, and a deferral has
// no time when [bgtask.WithDeferralSites] is off. reason is the cancellation reason's
// name for a canceled result or a canceling or terminated instance, else "". Lists are
// never null.
//
// # Goroutines and lifetimes
//
// Every route runs on the goroutine net/http calls the handler on, and returns before
// the request ends: it leaves no goroutine behind.
//
// The list of recent completions is the host's own ([bgtask.Host.Completions]): the
// handler keeps no copy of the host's state, and subscribes only while an /api/events
// stream is open, so it costs the host's instances nothing (see BenchmarkEndToEnd in
// bench_test.go), and it may outlive its host's shutdown, showing the state as it was
// then. (A host sends no events once shut down, so a stream does not see a registration
// unregistered after that; GET /api/state does.)
//
// Each GET /api/events looks at the state at most every 250 ms, and reads and sends it
// only when it may have changed: while instances are listed (their progress and
// deferrals raise no event), after a registration was made, changed by Ensure or removed
// (it subscribes to those, and stops that subscription before it returns), and after an
// instance started or completed (told by the instances listed and by the count of
// completions). An open page therefore costs the host's instances nothing more. The
// stream returns when the client goes away (the request's context ends), when the
// [http.Server] that serves it begins its Shutdown, which would otherwise wait for it,
// and when a message cannot be written within 10 seconds: a client that stops reading
// cannot hold it. A stream that starts once the Shutdown began ends at once, provided
// the handler had served a request of that server before the Shutdown began (the page's
// own, say): net/http tells a Shutdown only to the funcs registered before it.
package bgtaskhttp

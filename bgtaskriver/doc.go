// Package bgtaskriver runs the background tasks of a fleet of bgtask hosts, the replicas
// of one program, on River (github.com/riverqueue/river), a durable job queue on Postgres.
// Each fire of a registration runs once in the fleet, on whichever replica takes it; the
// fires a crashed replica accepted run again on another; any replica cancels an instance
// running on another, and reads its progress and result.
//
// # Setup
//
// Each replica makes a [Fleet] on the fleet's database, a host with the fleet's options,
// Ensures its registrations, and starts the fleet:
//
//	fleet, err := bgtaskriver.New(pool, bgtaskriver.Config{}) // pool: a *pgxpool.Pool
//	if err != nil {
//		return err
//	}
//	if err := fleet.Migrate(ctx); err != nil { // River's tables and the fleet's
//		return err
//	}
//	host, err := bgtask.NewHost(append(fleet.Options(), bgtask.WithEntryPoint("sync", syncTask))...)
//	if err != nil {
//		return err
//	}
//	_, err = host.Ensure(bgtask.Builder{Name: "sync", TaskEntryPoint: "sync",
//		Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}})
//	if err != nil {
//		return err
//	}
//	if err := fleet.Start(ctx, host); err != nil {
//		return err
//	}
//	defer func() {
//		fleet.Stop(context.Background()) // first: its instances run again elsewhere
//		host.Shutdown(context.Background())
//	}()
//
// Every replica must Ensure the same registrations (as River's periodic jobs are added to
// every client): a registration's TaskID comes from its Name and TaskEntryPoint (see
// [bgtask.WithDispatcher]), and the fires go to the replicas that have it. The
// registrations whose fires the fleet takes are those with a TaskEntryPoint (a closure
// cannot run on another replica) on an ApplicationTrigger or a TimeTrigger; the others
// (SystemTrigger, CustomTrigger, a Task without an entry point) stay on their host.
//
// # From fires to jobs
//
// A fire is a River job of kind "bgtask" in the queue "bgtask", whose args name the
// registration. The host hands it to the fleet's dispatcher, which inserts it, grouped
// with the fires of other goroutines into one InsertMany (as a database's group commit
// does); a replica's River client takes it and runs its instance with [bgtask.Host.RunInstance],
// under every rule of that host.
//
//   - Request is a job unique by TaskID while queued or running: a second Request, from any
//     replica, answers CurrentlyRunning, also while the first is held, and until River
//     has written the end of the job, in batches, up to about 250 ms after the
//     instance's Completed event (a Request from an OnCompleted handler may answer
//     CurrentlyRunning; one after RequestAndWait returned does not). Its arguments
//     travel as JSON and keep their Go types: ints, uints, float32s, float64s, times
//     (their instant and offset, not their zone's name), durations and byte slices;
//     other values (named types such as a type Color int, pointers, structs) come back
//     as encoding/json reads them into an any. RequestAndWait waits for the job's end
//     by reading its row, every 5 ms at first, doubling up to every 500 ms: it returns
//     within as long again as the job took, and at most 500 ms, after the job ended. If
//     that wait fails (its ctx ends, a read fails), it returns the error, and the job,
//     already queued, still runs.
//   - A TimeTrigger's times are on a grid from the Unix epoch, the same in every replica;
//     each replica's scheduler inserts the job of each time, unique by TaskID and time
//     for good, so the first insert wins and each time runs once. A time that comes
//     while the last one's instance runs, on any replica, is held, and the times held
//     meanwhile coalesce into one catch-up, for the latest, as on one host; a time never
//     runs after a later one (the table bgtask_time_fire keeps the latest time let run).
//     After the whole fleet was down, the first replica back inserts the catch-up of the
//     latest time missed. The times due at one instant (on the grid, those of every
//     registration of a period) are inserted together, up to 64 in a round trip: the
//     instances of 1,000 time triggers due at once start within about half a second of
//     their time on one replica of two cores (BenchmarkFleetTimeTriggersDueAtOnce).
//   - A fire that the replica that takes it must hold (its instance runs, the host is
//     suspended, a condition does not hold, Policy.MaxConcurrent is reached: RunInstance
//     says ErrHeld) is snoozed, 50 ms at first, doubling up to 1 s, and any replica may
//     take it next: it is held, never dropped. A replica whose host does not have the
//     registration snoozes its fire for 1 s; a fire whose registration no replica has
//     any more (it was unregistered) is dropped, canceled with Abort.
//   - The instance's result ends the job: completed, or cancelled for a canceled
//     instance; a task's error or panic is a result, not a reason to run it again. It
//     is written in the job's output (River's RecordOutput), but for a plain success (no
//     error, not canceled, no progress), which the row itself tells.
//   - SetProgress reaches the local OnProgress handlers at once; the fleet writes the
//     latest value to the job's output (River's JobUpdate) at most every 250 ms, on a
//     goroutine of its own, never blocking the task. Any replica reads it with
//     [Fleet.Instance] within a second, and the results with [Fleet.LastResult].
//   - [Fleet.Cancel], on any replica, is River's JobCancel: on the replica that runs the
//     instance its context's cause is the *bgtask.CanceledError with Abort, and its
//     OnCanceled handlers run. It takes an InstanceID, which a fire gets when a replica
//     takes it: a fire still queued since its Request has none to cancel it by.
//   - [Fleet.Stop] cancels the instances of its replica with Terminating: their fires run
//     again on another replica (River hands the jobs back, with their attempts), or end
//     canceled with [Config].StopCancelsJobs.
//   - The jobs of a replica that crashed stay running until River's rescuer, on the
//     replica elected leader, finds them older than [Config].RescueAfter: they then run
//     again on another replica. A job's replica may crash 25 times before River discards
//     it.
//   - A OneShot registration fires once in the fleet. Its job is unique by TaskID alone,
//     in every state (a OneShot TimeTrigger's time is not part of the key, as each
//     replica's Register gives it its own), so the fires of other replicas are refused
//     (CurrentlyRunning), and a replica whose fire was refused or taken refuses the next
//     ones itself. The replica whose instance starts unregisters it, and deletes its
//     record once the instance ends, unless it was handed back by a stopping replica: the
//     replica that runs it again, even one that only restored it from the store, finds
//     it. The other replicas drop it at their next start.
//
// Results stay readable as long as River keeps finished jobs (its Config's retention
// periods, 24 hours for completed and cancelled jobs by default). The jobs of time fires
// and of OneShot registrations are unique for as long.
//
// # What cannot map
//
// Some of a single host's behaviour has no equivalent across a fleet:
//
//   - Completed and progress handlers run only on the replica that ran the instance; the
//     others read results and progress from the jobs ([Fleet.LastResult],
//     [Fleet.Instance]), and RequestAndWait polls the job. A registration's own
//     LastResult is its host's: it does not see the instances other replicas ran, and it
//     is not written to the shared store, so it starts empty after a restart. A fire
//     canceled before any replica took it raises no Completed event anywhere; its
//     result says so.
//   - Host.Cancel(reason) and Host.CancelInstance act on their own host only. A cancel
//     from another replica ([Fleet.Cancel]) is River's JobCancel, which carries no
//     reason: the instance is canceled with Abort.
//   - Policy.MaxConcurrent and [Config].MaxWorkers are per replica: nothing limits the
//     instances of the whole fleet.
//   - A crashed replica's job stays running until River's rescuer takes it, after
//     [Config].RescueAfter (and up to 35 seconds more: the rescuer runs every 30 s, and
//     River's scheduler makes the job available within 5 s). River cannot tell a crashed
//     replica's job from a long one, so RescueAfter also bounds every instance.
//   - A Request while a fire is queued answers CurrentlyRunning even while that fire is
//     held; on one host it would be Allowed, the held fire taking the latest arguments.
//   - Unregister removes a registration from its host and from the store, not from the
//     other replicas' hosts, which fire it until they restart; a fire of it that a
//     replica without it takes is dropped.
//
// # The store
//
// [Store] is a [bgtask.Store] in one table, bgtask_registration, beside River's tables.
// The program creates the table once with [Store.Migrate] (as it migrates River's tables
// with rivermigrate), or with [Fleet.Migrate], which migrates both, then hands the store
// to its host:
//
//	store, err := bgtaskriver.NewStore(pool, "") // pool: a *pgxpool.Pool; "": River's default schema
//	if err != nil {
//		return err
//	}
//	if err := store.Migrate(ctx); err != nil {
//		return err
//	}
//	host, err := bgtask.NewHost(bgtask.WithStore(store), bgtask.WithEntryPoint("sync", syncTask))
//
// The table holds one row per registration:
//
//	task_id    uuid PRIMARY KEY  the registration's TaskID
//	record     bytea NOT NULL    the record the host encoded
//	updated_at timestamptz       when the record was last written
//
// Each [Store.Apply] is one Postgres transaction: its puts and deletes are all committed, or
// none of them. Hosts on several replicas may share the table; each loads it when it
// starts (see [bgtask.WithStore]). Apply tries again a transaction that Postgres ended
// because it deadlocked with another replica's (a put and a delete of two records in
// each, at once), up to 5 times in all.
//
// # Goroutines
//
// The dispatcher runs on the goroutine that fired: Request's caller, or for time fires a
// goroutine of the host's, one per fire of those due together; the first of the
// goroutines that fire at once inserts for all of them. River runs each job on a
// goroutine of its own, which waits for the instance (the host runs the task on its own
// goroutines). The fleet's OnProgress handler runs on the host's event
// goroutine and hands progress to a writer goroutine per instance that reports any, which
// the job's goroutine stops and joins before the job ends. [Fleet.Stop] returns once
// River's goroutines, and so the writers, have.
package bgtaskriver

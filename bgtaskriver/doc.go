// Package bgtaskriver keeps the registrations of a fleet of bgtask hosts in Postgres, in the
// database and schema of the fleet's River queue (github.com/riverqueue/river), so that
// every replica of a program sees the same registrations.
//
// # The store
//
// [Store] is a [bgtask.Store] in one table, bgtask_registration, beside River's tables.
// The program creates the table once with [Store.Migrate] (as it migrates River's tables
// with rivermigrate), then hands the store to its host:
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
// starts (see [bgtask.WithStore]).
package bgtaskriver

package bgtaskriver_test

import (
	"testing"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A fire whose conditions do not hold on the replica that takes it is held (its job
// snoozed), not dropped, and runs once they hold on a replica.
func TestHeldFireRunsOnceConditionsHold(t *testing.T) {
	t.Parallel()
	db := newFleetDB(t)
	entry, started := runs(nil)
	cond := bgtask.SystemCondition{Type: bgtask.SystemConditionInternetAvailable}
	var trig *bgtask.ApplicationTrigger
	replicas := map[string]*replica{}
	for _, name := range []string{"a", "b"} {
		r := db.replica(t, name, bgtaskriver.Config{}, entry(name))
		r.host.SetCondition(cond.Type, false)
		trig = bgtask.NewApplicationTrigger()
		r.ensure(t, bgtask.Builder{Name: "online", TaskEntryPoint: "job", Trigger: trig, Conditions: []bgtask.Condition{cond}})
		r.start(t)
		replicas[name] = r
	}
	res, err := trig.Request(t.Context(), nil)
	require.NoError(t, err)
	require.Equal(t, bgtask.Allowed, res)
	eventually(t, waitFor, func() bool { return db.jobs(t)[0].snoozes >= 3 }, "the fire was not held")
	none(t, started, "held")

	replicas["b"].host.SetCondition(cond.Type, true)
	assert.Equal(t, "b", next(t, started).replica)
	eventually(t, waitFor, func() bool { return db.jobs(t)[0].state == "completed" }, "the job did not complete")
	assert.Equal(t, 1, db.jobs(t)[0].attempt, "snoozes hand their attempt back")
	none(t, started, "it ran once")
}

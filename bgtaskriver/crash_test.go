package bgtaskriver_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskriver"
	"github.com/bgtask-go/bgtask/bgtaskriver/internal/pgtest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// crashEnv holds the database URL and schema of a child process of
// TestCrashedReplicasFiresRunAgainElsewhere.
const crashEnv = "BGTASKRIVER_CRASH_CHILD"

// crashRescueAfter is the replicas' RescueAfter in the crash test: short, so that the test
// is, and long enough for the child to be killed before River's time limit (the same)
// cancels its instances.
const crashRescueAfter = 2 * time.Second

// A replica, a child process, is killed with SIGKILL while it runs two fires and has a
// third queued: the other replica runs the three, the two after RescueAfter.
func TestCrashedReplicasFiresRunAgainElsewhere(t *testing.T) {
	if env := os.Getenv(crashEnv); env != "" {
		crashChild(env)
		return
	}
	t.Parallel()
	db := newFleetDB(t)
	entry, started := runs(nil)
	b := db.replica(t, "b", bgtaskriver.Config{RescueAfter: crashRescueAfter}, entry("b"))
	var trigs []*bgtask.ApplicationTrigger
	for k := range 3 {
		trigs = append(trigs, bgtask.NewApplicationTrigger())
		b.ensure(t, bgtask.Builder{Name: fmt.Sprint("crash-", k), TaskEntryPoint: "job", Trigger: trigs[k]})
	}

	child := startChild(t, pgtest.URL(t)+" "+db.schema)
	require.Equal(t, "ready", next(t, child.lines))
	for _, trig := range trigs { // b takes no fire: its fleet is not started
		res, err := trig.Request(t.Context(), nil)
		require.NoError(t, err)
		require.Equal(t, bgtask.Allowed, res)
	}
	killed := make(map[string]uuid.UUID) // the child's instances, by registration name
	for len(killed) < 2 {                // its MaxWorkers: the third waits
		name, id, ok := strings.Cut(strings.TrimPrefix(next(t, child.lines), "running "), " ")
		require.True(t, ok)
		killed[name] = uuid.MustParse(id)
	}
	child.kill(t)

	// The test's input: River takes the child's jobs for stuck RescueAfter after they
	// started. The dead child's leadership would end after River's leader TTL (15 s): end
	// it now, so that b is elected at its start and its rescuer runs at once.
	time.Sleep(crashRescueAfter)
	_, err := db.pool.Exec(t.Context(), "DELETE FROM "+pgx.Identifier{db.schema, "river_leader"}.Sanitize())
	require.NoError(t, err)
	b.start(t)
	ranOnB := make(map[string]uuid.UUID)
	for range 3 {
		r := next(t, started)
		ranOnB[r.inst.Task().Name()] = r.id
	}
	assert.Len(t, ranOnB, 3, "each fire ran once on b")
	for name, id := range killed {
		st := finished(t, b.fleet, id)
		assert.Equal(t, "b", st.Replica, name)
		assert.Equal(t, ranOnB[name], st.InstanceID, "%s: the fire ran again, as a new instance", name)
		assert.NoError(t, st.Result.Err)
	}
	eventually(t, waitFor, func() bool {
		for _, j := range db.jobs(t) {
			if j.state != "completed" {
				return false
			}
		}
		return true
	}, "the jobs did not complete")
	for _, j := range db.jobs(t) {
		_, crashed := killed[j.name]
		assert.Equal(t, map[bool]int{true: 2, false: 1}[crashed], j.attempt, "%s: a crash uses an attempt", j.name)
	}
	none(t, started, "no fire ran twice")
}

// child is a replica in a child process.
type child struct {
	cmd   *osexec.Cmd
	lines chan string // what it prints, line by line; closed when it exits
}

// startChild starts a replica in a child process, on the database and schema of env.
func startChild(t *testing.T, env string) *child {
	cmd := osexec.Command(os.Args[0], "-test.run=^TestCrashedReplicasFiresRunAgainElsewhere$")
	cmd.Env = append(os.Environ(), crashEnv+"="+env)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, lines: make(chan string, 100)}
	go func() { // ends when the child's stdout closes: at its death
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() { c.kill(t) })
	return c
}

// kill kills the child with SIGKILL and waits for it and its reader. Calling it again does
// nothing.
func (c *child) kill(t *testing.T) {
	if c.cmd.ProcessState != nil {
		return
	}
	assert.NoError(t, c.cmd.Process.Signal(syscall.SIGKILL))
	for range c.lines { // drains what is left, until the reader closes it
	}
	_ = c.cmd.Wait() // "signal: killed"
}

// crashChild is the child replica: it has the registrations crash-0 to crash-2, runs
// fires two at a time, each until its cancellation, printing "running NAME INSTANCEID",
// and waits to be killed.
func crashChild(env string) {
	url, schema, _ := strings.Cut(env, " ")
	fail := func(err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	fail(err)
	f, err := bgtaskriver.New(pool, bgtaskriver.Config{Schema: schema, ID: "child", MaxWorkers: 2, RescueAfter: crashRescueAfter,
		FetchCooldown: testFetchCooldown, FetchPollInterval: testFetchPollInterval, Logger: quiet})
	fail(err)
	task := bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
		fmt.Println("running", inst.Task().Name(), inst.InstanceID())
		<-ctx.Done()
		return nil
	})
	h, err := bgtask.NewHost(append(f.Options(), bgtask.WithEntryPoint("job", task), bgtask.WithLogger(nil))...)
	fail(err)
	for k := range 3 {
		_, err := h.Ensure(bgtask.Builder{Name: fmt.Sprint("crash-", k), TaskEntryPoint: "job", Trigger: bgtask.NewApplicationTrigger()})
		fail(err)
	}
	fail(f.Start(ctx, h))
	fmt.Println("ready")
	time.Sleep(time.Hour) // until the kill
}

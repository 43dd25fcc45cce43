package boltstore_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/boltstore"
)

// crashEnv names the store file of a child process of TestCrashLosesNothingThatReturned.
const crashEnv = "BOLTSTORE_CRASH_CHILD"

// TestCrashLosesNothingThatReturned re-executes the test binary as a child that registers,
// unregisters and ensures in a loop on a store file, printing a line after each call
// returns, and kills it with SIGKILL at random moments. After each kill the file opens,
// every registration whose Register or Ensure returned is there, and every one whose
// Unregister returned is gone (one whose Unregister was under way may be either).
func TestCrashLosesNothingThatReturned(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("kills 50 child processes")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	present := make(map[uuid.UUID]bool) // what the children said, across kills
	for kill := range 50 {
		lines := runAndKill(t, path, time.Duration(5+rand.IntN(60))*time.Millisecond)
		for _, line := range lines {
			verb, id, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			if verb == "unregistering" { // killed before it returned: either is right
				delete(present, uuid.MustParse(id))
				continue
			}
			present[uuid.MustParse(id)] = verb != "unregistered"
		}
		s, err := boltstore.Open(path)
		require.NoError(t, err, "kill %d", kill)
		recs, err := s.Load(context.Background())
		require.NoError(t, err, "kill %d", kill)
		require.NoError(t, s.Close())
		for id, want := range present {
			_, got := recs[id]
			require.Equal(t, want, got, "kill %d: registration %s", kill, id)
		}
	}
}

// runAndKill starts a child on path, kills it after d, and returns the lines it printed.
func runAndKill(t *testing.T, path string, d time.Duration) []string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashLosesNothingThatReturned$")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var lines []string
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out) // a line cut by the kill has no newline: Scan drops it
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
	}()
	time.Sleep(d) // the moment of the kill is the test's input, not a wait for a goroutine
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	<-read
	_ = cmd.Wait()
	return lines
}

// crashChild registers, unregisters and ensures until it is killed.
func crashChild(path string) {
	var s *boltstore.Store
	var err error
	for s, err = boltstore.Open(path); err != nil; s, err = boltstore.Open(path) {
		// the previous child's lock may linger a moment after its death
	}
	nop := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	h, err := bgtask.NewHost(bgtask.WithStore(s), bgtask.WithEntryPoint("nop", nop), bgtask.WithLogger(nil))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mine []*bgtask.Registration
	for n := 0; ; n++ {
		b := bgtask.Builder{Name: fmt.Sprint("r", n), TaskEntryPoint: "nop", Trigger: &bgtask.TimeTrigger{FreshnessTime: time.Hour}}
		switch n % 3 {
		case 0, 1:
			r, err := h.Register(b)
			if err == nil {
				mine = append(mine, r)
				fmt.Println("registered", r.TaskID())
			}
		case 2:
			if len(mine) > 0 {
				r := mine[0]
				mine = mine[1:]
				fmt.Println("unregistering", r.TaskID())
				r.Unregister(false)
				fmt.Println("unregistered", r.TaskID())
			}
			b.Name = fmt.Sprint("ensured", n%5)
			if r, err := h.Ensure(b); err == nil {
				fmt.Println("ensured", r.TaskID())
			}
		}
	}
}

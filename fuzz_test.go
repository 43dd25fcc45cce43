package bgtask_test

import (
	"context"
	"errors"
	"testing"

	"github.com/bgtask-go/bgtask"
)

// FuzzRequest drives registration names and Request arguments through the public API: no
// panic, a clear error for a bad name, and every accepted fire ends in exactly one
// Completed event whose task read back the arguments it was given.
func FuzzRequest(f *testing.F) {
	f.Add("download", "url", "https://example.com", int64(3), uint8(1))
	f.Add("", "", "", int64(0), uint8(0))
	f.Add("<script>alert(1)</script>", "\x00", "\xff\xfe", int64(-1), uint8(200))
	f.Add("名前", "n", "v", int64(1<<62), uint8(7))
	f.Fuzz(func(t *testing.T, name, key, value string, n int64, requests uint8) {
		h, err := bgtask.NewHost(bgtask.WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		trig := bgtask.NewApplicationTrigger()
		reg, err := h.Register(bgtask.Builder{Name: name, Trigger: trig, Task: bgtask.TaskFunc(
			func(_ context.Context, inst bgtask.BackgroundTaskInstance) error {
				v, err := bgtask.Arg[string](inst, key)
				if err != nil || v != value {
					return errors.New("argument lost")
				}
				if got, err := bgtask.Arg[int64](inst, "n"); key != "n" && (err != nil || got != n) {
					return errors.New("argument lost")
				}
				return nil
			})})
		if name == "" {
			if !errors.Is(err, bgtask.ErrInvalidArgument) {
				t.Fatalf("empty name: %v", err)
			}
			_ = h.Shutdown(context.Background())
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		completed := make(chan bgtask.CompletedEventArgs, 256)
		reg.OnCompleted(func(e bgtask.CompletedEventArgs) { completed <- e })
		accepted := 0
		for range requests % 16 {
			args := map[string]any{"n": n, key: value}
			res, err := trig.Request(context.Background(), args)
			if err != nil {
				t.Fatal(err)
			}
			if res == bgtask.Allowed {
				accepted++
			}
		}
		if err := h.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(completed) != accepted {
			t.Fatalf("%d fires accepted, %d Completed events", accepted, len(completed))
		}
		for range accepted {
			if e := <-completed; e.Err != nil && !e.Canceled {
				t.Fatalf("%v", e.Err)
			}
		}
	})
}

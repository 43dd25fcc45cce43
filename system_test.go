package bgtask_test

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
)

func TestSignalFiresRegistrationsOfThatType(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		net, tz := newRecorder(nil), newRecorder(nil)
		shared := &bgtask.SystemTrigger{Type: bgtask.SystemTriggerNetworkStateChange}
		for range 2 {
			mustRegister(t, h, bgtask.Builder{Name: "net", Task: net, Trigger: shared})
		}
		mustRegister(t, h, bgtask.Builder{Name: "tz", Task: tz, Trigger: &bgtask.SystemTrigger{Type: bgtask.SystemTriggerTimeZoneChange}})
		h.Signal(bgtask.SystemTriggerNetworkStateChange)
		synctest.Wait()
		runs := net.drain()
		require.Len(t, runs, 2, "each registration of the trigger fires")
		assert.Equal(t, bgtask.SystemTriggerNetworkStateChange, runs[0].details.(*bgtask.SystemTriggerDetails).Type)
		assert.Empty(t, tz.drain())
		h.Signal(42)                               // not a type: nothing happens
		shared.Type = bgtask.SystemTriggerUserAway // changed after Register: the registrations keep theirs
		for _, r := range h.AllTasks() {
			r.Unregister(false)
		}
		h.Signal(bgtask.SystemTriggerNetworkStateChange)
		synctest.Wait()
		assert.Empty(t, net.drain(), "fired after Unregister")
		require.NoError(t, h.Shutdown(context.Background()))
		h.Signal(bgtask.SystemTriggerTimeZoneChange) // closed: nothing happens
		synctest.Wait()
		assert.Empty(t, tz.drain())
	})
}

func TestSignalWhileRunningIsHeldAndCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHost(t)
		release := make(chan struct{})
		rec := newRecorder(func(context.Context, bgtask.BackgroundTaskInstance) error { <-release; return nil })
		mustRegister(t, h, bgtask.Builder{Name: "s", Task: rec, Trigger: &bgtask.SystemTrigger{Type: bgtask.SystemTriggerUserPresent}})
		for range 4 {
			h.Signal(bgtask.SystemTriggerUserPresent)
		}
		synctest.Wait()
		assert.Len(t, rec.drain(), 1)
		release <- struct{}{}
		synctest.Wait()
		assert.Len(t, rec.drain(), 1, "three held fires start one instance")
		close(release)
		synctest.Wait()
		assert.Empty(t, rec.drain())
		require.NoError(t, h.Shutdown(context.Background()))
	})
}

func TestOneShotForEveryTriggerKind(t *testing.T) {
	for _, tc := range []struct {
		name string
		trig bgtask.Trigger
		fire func(h *bgtask.Host)
	}{
		{"system", &bgtask.SystemTrigger{Type: bgtask.SystemTriggerSessionConnected, OneShot: true},
			func(h *bgtask.Host) { h.Signal(bgtask.SystemTriggerSessionConnected) }},
		{"application", &bgtask.ApplicationTrigger{OneShot: true}, nil},
		{"custom", &bgtask.CustomTrigger{OneShot: true, Watch: func(ctx context.Context, fire func(any) bgtask.ApplicationTriggerResult) error {
			fire("first")
			fire("second") // held while the first runs; dropped when the registration ends
			<-ctx.Done()
			return nil
		}}, func(*bgtask.Host) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHost(t)
				rec := newRecorder(nil)
				reg := mustRegister(t, h, bgtask.Builder{Name: "once", Task: rec, Trigger: tc.trig})
				fire := tc.fire
				if fire == nil {
					fire = func(*bgtask.Host) { _, _ = tc.trig.(*bgtask.ApplicationTrigger).Request(context.Background(), nil) }
				}
				fire(h)
				synctest.Wait()
				fire(h)
				synctest.Wait()
				assert.Len(t, rec.drain(), 1)
				_, ok := h.Lookup(reg.TaskID())
				assert.False(t, ok)
				require.NoError(t, h.Shutdown(context.Background()))
			})
		})
	}
}

func TestSystemTriggerBadInput(t *testing.T) {
	h := newHost(t)
	task := bgtask.TaskFunc(func(context.Context, bgtask.BackgroundTaskInstance) error { return nil })
	for _, trig := range []bgtask.Trigger{&bgtask.SystemTrigger{Type: 1}, &bgtask.SystemTrigger{}, &bgtask.CustomTrigger{}} {
		_, err := h.Register(bgtask.Builder{Name: "x", Task: task, Trigger: trig})
		assert.ErrorIs(t, err, bgtask.ErrInvalidArgument)
	}
	for _, trig := range []bgtask.Trigger{(*bgtask.SystemTrigger)(nil), (*bgtask.TimeTrigger)(nil), (*bgtask.CustomTrigger)(nil)} {
		_, err := h.Register(bgtask.Builder{Name: "x", Task: task, Trigger: trig})
		assert.ErrorIs(t, err, bgtask.ErrNoTrigger)
	}
	require.NoError(t, h.Shutdown(context.Background()))
}

func TestSystemTriggerTypeStrings(t *testing.T) {
	for typ, want := range map[bgtask.SystemTriggerType]string{
		2: "UserPresent", 3: "UserAway", 4: "NetworkStateChange", 6: "InternetAvailable", 7: "SessionConnected",
		8: "ServicingComplete", 11: "TimeZoneChange", 13: "BackgroundWorkCostChange", 14: "PowerStateChange",
		5: "SystemTriggerType(5)",
	} {
		assert.Equal(t, want, typ.String())
	}
}

func TestCustomTrigger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := new(syncBuffer)
		h := newHost(t, bgtask.WithLogger(slogTo(log)))
		files := make(chan string)
		watching := make(chan struct{}, 2)
		trig := &bgtask.CustomTrigger{Watch: func(ctx context.Context, fire func(any) bgtask.ApplicationTriggerResult) error {
			watching <- struct{}{}
			for {
				select {
				case <-ctx.Done():
					return nil
				case name := <-files:
					fire(name)
				}
			}
		}}
		rec := newRecorder(nil)
		reg := mustRegister(t, h, bgtask.Builder{Name: "on file", Task: rec, Trigger: trig})
		<-watching
		files <- "a.txt"
		synctest.Wait()
		runs := rec.drain()
		require.Len(t, runs, 1)
		assert.Equal(t, "a.txt", runs[0].details)

		reg.Unregister(false)
		synctest.Wait() // Watch returned: synctest would report it blocked otherwise at the end

		_, err := h.Register(bgtask.Builder{Name: "panics", Task: rec, Trigger: &bgtask.CustomTrigger{
			Watch: func(context.Context, func(any) bgtask.ApplicationTriggerResult) error { panic("watch") }}})
		require.NoError(t, err)
		mustRegister(t, h, bgtask.Builder{Name: "again", Task: rec, Trigger: trig})
		<-watching
		require.NoError(t, h.Shutdown(context.Background()), "Shutdown stops Watch")
		assert.Contains(t, log.String(), "panic in CustomTrigger.Watch recovered")
	})
}

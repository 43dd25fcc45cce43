// Package bgtasktest runs one instance of a [bgtask.BackgroundTask] in a test and reports
// how it ended: its Completed event, every progress value it set, and whether it was
// terminated.
//
// [Run] makes a host for the one instance, starts it with the trigger details the test
// chooses ([WithArgs], [WithDetails]), cancels it when the test says ([CancelAtProgress],
// [CancelAfter]), and shuts the host down before it returns. A task that leaks is found:
// when the instance is terminated (canceled, and not finished within its grace period),
// Run fails the test and names the file and line of each deferral left and of each Go func
// still running.
//
//	func TestSync(t *testing.T) {
//		res := bgtasktest.Run(t, syncTask, bgtasktest.WithArgs(map[string]any{"path": "/inbox"}))
//		if err := res.CheckResult(); err != nil {
//			t.Fatal(err)
//		}
//		if !slices.Equal(res.Progress, []uint32{50, 100}) {
//			t.Errorf("progress %v", res.Progress)
//		}
//	}
//
// # Time
//
// Run makes its host, and with it every timer of the instance, on the calling goroutine.
// Called inside a [testing/synctest] bubble, it therefore runs on the bubble's fake clock:
// time limits, grace periods and [CancelAfter] pass as soon as every goroutine of the
// bubble is blocked, so a test of a ten-minute limit takes no time and no sleep:
//
//	func TestSyncTimesOut(t *testing.T) {
//		synctest.Test(t, func(t *testing.T) {
//			res := bgtasktest.Run(t, slowTask, bgtasktest.CancelAfter(10*time.Minute, bgtask.Abort))
//			if !res.Canceled || res.Finished.Sub(res.Started) != 10*time.Minute {
//				t.Errorf("canceled %v after %v", res.Canceled, res.Finished.Sub(res.Started))
//			}
//		})
//	}
//
// TestRunInBubble in this package's example_test.go runs that test.
package bgtasktest

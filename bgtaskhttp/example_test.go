package bgtaskhttp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskhttp"
)

// ExampleNew mounts the page beside the program's other debug handlers, as
// net/http/pprof is, and reads the state as a program or a script would. The page
// itself is at /debug/bgtask/.
func ExampleNew() {
	host, err := bgtask.NewHost()
	if err != nil {
		panic(err)
	}
	defer host.Shutdown(context.Background())
	_, err = host.Register(bgtask.Builder{
		Name:    "sync",
		Trigger: &bgtask.TimeTrigger{FreshnessTime: 15 * time.Minute},
		Task: bgtask.TaskFunc(func(ctx context.Context, inst bgtask.BackgroundTaskInstance) error {
			return nil
		}),
		Conditions: []bgtask.Condition{bgtask.SystemCondition{Type: bgtask.SystemConditionInternetAvailable}},
	})
	if err != nil {
		panic(err)
	}

	mux := http.NewServeMux()
	mux.Handle("/debug/bgtask/", http.StripPrefix("/debug/bgtask", bgtaskhttp.New(host, bgtaskhttp.AllowCancel())))
	srv := httptest.NewServer(mux) // in a program: http.ListenAndServe("127.0.0.1:6060", mux)
	defer srv.Close()

	res, err := srv.Client().Get(srv.URL + "/debug/bgtask/api/state")
	if err != nil {
		panic(err)
	}
	defer res.Body.Close()
	var state struct {
		Registrations []struct {
			Name       string   `json:"name"`
			Trigger    string   `json:"trigger"`
			Conditions []string `json:"conditions"`
		} `json:"registrations"`
	}
	if err := json.NewDecoder(res.Body).Decode(&state); err != nil {
		panic(err)
	}
	for _, r := range state.Registrations {
		fmt.Printf("%s: %s, when %v\n", r.Name, r.Trigger, r.Conditions)
	}
	// Output:
	// sync: TimeTrigger every 15m0s, when [InternetAvailable]
}

package bgtaskhttp

import (
	"bytes"
	"crypto/rand"
	_ "embed"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// page.html is the page: an html/template, which escapes everything it inserts, with
// the inline script that keeps it up to date (see the comment at the top of the script
// for how that escapes).
//
//go:embed page.html
var pageSource string

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"outcome": outcome,
	"kind":    kind,
	"took":    took,
	"join":    func(s []string) string { return strings.Join(s, ", ") },
	"cancelable": func(in instance) bool {
		return in.State == "Running" || in.State == "Draining"
	},
}).Parse(pageSource))

// page is what the page is rendered from.
type page struct {
	state
	Cancel bool      // whether to show cancel buttons
	Nonce  string    // lets the inline style and script run under the Content-Security-Policy
	Now    time.Time // when the state was read: the ages are counted from it
}

// servePage answers GET /. The Content-Security-Policy lets only the page's own inline
// style and script run, and lets them talk only to this server: should a name slip
// through unescaped, it still could not run a script of its own. frame-ancestors keeps
// the cancel buttons out of another site's frames.
func (h *handler) servePage(w http.ResponseWriter, r *http.Request) {
	p := page{state: h.snapshot(), Cancel: h.allowCancel, Nonce: rand.Text(), Now: time.Now()}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, p); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+p.Nonce+
		"'; style-src 'nonce-"+p.Nonce+"'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	_, _ = w.Write(buf.Bytes()) // an error means the client went away: nothing to do
}

// The helpers below have twins of the same names in the page's script, which renders
// the same rows from each message: keep them alike.

// Stamp is the state's time, for the script to count ages from.
func (p page) Stamp() string { return stamp(p.Now) }

// Age is how long ago the time s of the state was: "12s", "3m4s", or "—" for none.
func (p page) Age(s string) string {
	t, err := time.Parse(stampLayout, s)
	if err != nil {
		return "—"
	}
	return duration(p.Now.Sub(t))
}

// outcome says how a completion ended.
func outcome(r result) string {
	switch {
	case r.Canceled && r.Error != "":
		return "canceled (" + r.Reason + "): " + r.Error
	case r.Canceled:
		return "canceled (" + r.Reason + ")"
	case r.Error != "":
		return "error: " + r.Error
	}
	return "ok"
}

// kind is the CSS class of a completion's outcome.
func kind(r result) string {
	switch {
	case r.Error != "" && !r.Canceled:
		return "err"
	case r.Canceled:
		return "cancel"
	}
	return "ok"
}

// took is how long a completion ran: "153ms", "2m3s", or "—" when it never started.
func took(r result) string {
	started, err1 := time.Parse(stampLayout, r.Started)
	finished, err2 := time.Parse(stampLayout, r.Finished)
	switch d := finished.Sub(started); {
	case err1 != nil || err2 != nil:
		return "—"
	case d < time.Second:
		return strconv.FormatInt(max(d.Milliseconds(), 0), 10) + "ms"
	default:
		return duration(d)
	}
}

// duration formats d to the second, as Duration.String does: "0s", "12s", "1h2m3s".
func duration(d time.Duration) string {
	return max(d, 0).Round(time.Second).String()
}

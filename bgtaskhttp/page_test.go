package bgtaskhttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"html"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgtask-go/bgtask"
	"github.com/bgtask-go/bgtask/bgtaskhttp"
)

// hostile is a name, and an error, that would run a script if put into the page as HTML.
const (
	hostileName  = `<script>alert(1)</script>`
	hostileError = `<img src=x onerror=alert(2)> "quoted" & 'single'`
)

// hostileHost has a registration named hostileName that failed with hostileError, and
// one of the same name running, with a deferral; hd serves it with AllowCancel.
func hostileHost(t *testing.T) (h *bgtask.Host, hd http.Handler, release func()) {
	h = newHost(t)
	hd = bgtaskhttp.New(h, bgtaskhttp.AllowCancel())
	run(t, h, hostileName, errors.New(hostileError))
	started := make(chan bgtask.BackgroundTaskInstance, 1)
	start(t, h, hostileName, working(started))
	inst := <-started
	return h, hd, func() { h.CancelInstance(inst.InstanceID(), bgtask.Abort) }
}

// assertEscaped checks that html shows the hostile name, and the hostile error when it
// is to show it, as text.
func assertEscaped(t *testing.T, html string, withError bool) {
	t.Helper()
	assert.NotContains(t, html, "<script>alert")
	assert.NotContains(t, html, "<img")
	assert.Contains(t, html, "&lt;script&gt;alert(1)&lt;/script&gt;")
	if withError {
		assert.Contains(t, html, "&lt;img src=x onerror=alert(2)&gt;")
	}
}

func TestPageRenderedOnTheServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, hd, release := hostileHost(t)
		defer release()
		synctest.Wait()
		w := serve(hd, http.MethodGet, "/")
		require.Equal(t, http.StatusOK, w.Code)
		page := w.Body.String()
		assertEscaped(t, page, true)
		assert.Equal(t, 2, strings.Count(page, "&lt;script&gt;alert(1)&lt;/script&gt;</td><td>ApplicationTrigger"), "both registrations")
		assert.Contains(t, page, `<progress max="100" value="40"></progress> 40%`)
		assert.Regexp(t, `deferral <span class="site">state_test\.go:\d+</span>`, page)
		assert.Regexp(t, `Go func <span class="site">state_test\.go:\d+</span>`, page)
		assert.Contains(t, page, "error: &lt;img")
		assert.Equal(t, 1, strings.Count(page, "<script"), "the page's own script only")
		assert.Equal(t, 1, strings.Count(tbody(t, page, "instances"), `<button data-id="`))

		h, _, _ := hostileHost(t)
		page = serve(bgtaskhttp.New(h), http.MethodGet, "/").Body.String()
		assert.NotContains(t, tbody(t, page, "instances"), "<button", "no cancel without AllowCancel")
	})
}

// TestPageSelfContained: nothing is loaded from elsewhere, and the policy says so.
func TestPageSelfContained(t *testing.T) {
	w := serve(bgtaskhttp.New(newHost(t)), http.MethodGet, "/")
	page := w.Body.String()
	assert.NotRegexp(t, `(?i)(src|href)\s*=`, page)
	assert.NotRegexp(t, `(?i)(https?:|url\()`, page)
	csp := w.Header().Get("Content-Security-Policy")
	nonce := regexp.MustCompile(`<script nonce="([^"]+)">`).FindStringSubmatch(page)
	require.Len(t, nonce, 2)
	assert.Contains(t, csp, "default-src 'none'")
	assert.Contains(t, csp, "script-src 'nonce-"+nonce[1]+"'")
	assert.Contains(t, csp, "connect-src 'self'")
	assert.Contains(t, page, `EventSource("api/events")`, "a relative URL: it works under any mount")

	again := serve(bgtaskhttp.New(newHost(t)), http.MethodGet, "/").Body.String()
	assert.NotContains(t, again, nonce[1], "a new nonce for each response")
}

// pageScript returns the page's inline script.
func pageScript(t *testing.T, page string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)<script nonce="[^"]+">(.*)</script>`).FindStringSubmatch(page)
	require.Len(t, m, 2)
	return m[1]
}

// TestPageScriptInterpolatesOnlyEscaped reads the script: every value a template literal
// interpolates goes through esc, or through a function named …HTML that builds HTML the
// same way.
func TestPageScriptInterpolatesOnlyEscaped(t *testing.T) {
	script := pageScript(t, serve(bgtaskhttp.New(newHost(t)), http.MethodGet, "/").Body.String())
	holes := regexp.MustCompile(`\$\{`).FindAllStringIndex(script, -1)
	require.NotEmpty(t, holes)
	safe := regexp.MustCompile(`^\$\{(esc|\w+HTML)\(`)
	for _, at := range holes {
		assert.Regexp(t, safe, script[at[0]:], "at %q", script[at[0]:min(at[0]+40, len(script))])
	}
	assert.NotContains(t, script, "outerHTML")
	assert.NotContains(t, script, "insertAdjacentHTML")
	assert.NotContains(t, script, "document.write")
	assert.Equal(t, 1, strings.Count(script, "innerHTML ="), "one place sets HTML: the rows built above")
}

// TestPageScriptRendersLikeTheServer runs the page's script in Node, when it is installed,
// on the state of hostileHost: its rows show the names and errors as text, and are the
// server's rows, but for the ages, which the script fills in apart.
func TestPageScriptRendersLikeTheServer(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	var page, state string
	synctest.Test(t, func(t *testing.T) {
		_, hd, release := hostileHost(t)
		defer release()
		synctest.Wait()
		page = serve(hd, http.MethodGet, "/").Body.String()
		state = serve(hd, http.MethodGet, "/api/state").Body.String()
	})
	file := filepath.Join(t.TempDir(), "page.js")
	harness := "\nprocess.stdout.write(JSON.stringify(rowsHTML(" + state + ", true)));\n"
	require.NoError(t, os.WriteFile(file, []byte(pageScript(t, page)+harness), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, err := exec.CommandContext(ctx, node, file).Output()
	require.NoError(t, err)
	var rows map[string]string
	require.NoError(t, json.Unmarshal(out, &rows))

	for _, id := range []string{"instances", "registrations", "recent"} {
		assertEscaped(t, rows[id], id != "instances")
		assert.Equal(t, normalize(tbody(t, page, id)), normalize(rows[id]), id)
	}
}

// tbody returns the rows of the page's tbody id.
func tbody(t *testing.T, page, id string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)<tbody id="` + id + `">(.*?)</tbody>`).FindStringSubmatch(page)
	require.Len(t, m, 2)
	return m[1]
}

var ageText = regexp.MustCompile(`(class="age" data-t="[^"]*">)[^<]*`)

// normalize removes the ages' text and decodes the entities, which html/template and the
// script spell differently (&#34; and &quot;).
func normalize(rows string) string {
	return html.UnescapeString(ageText.ReplaceAllString(strings.TrimSpace(rows), "$1"))
}

// TestPageScriptWiring runs the page's script in Node, when it is installed, against a
// stand-in for the browser's DOM, EventSource and fetch: a message renders the rows and
// the counts, the ages are filled in, and a cancel button posts to its instance's URL.
func TestPageScriptWiring(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	var page, state string
	synctest.Test(t, func(t *testing.T) {
		_, hd, release := hostileHost(t)
		defer release()
		synctest.Wait()
		page = serve(hd, http.MethodGet, "/").Body.String()
		state = serve(hd, http.MethodGet, "/api/state").Body.String()
	})
	now := regexp.MustCompile(`data-now="([^"]+)"`).FindStringSubmatch(page)
	require.Len(t, now, 2)
	stubs := `
const els = {};
const el = (id) => els[id] ??= {textContent: "", innerHTML: "", className: "", on: {},
  addEventListener(type, f) { this.on[type] = f; }};
const ageCell = {dataset: {t: "` + now[1] + `"}, textContent: ""};
globalThis.document = {body: {dataset: {now: "` + now[1] + `", cancel: "1"}}, getElementById: el,
  querySelectorAll: () => [ageCell]};
let source, posted;
globalThis.EventSource = class { constructor(url) { this.url = url; source = this; } };
globalThis.fetch = (url, opts) => { posted = opts.method + " " + url; return Promise.resolve({ok: true, status: 204}); };
globalThis.setInterval = () => {};
`
	harness := `
source.onopen();
source.onmessage({data: JSON.stringify(` + state + `)});
const button = {dataset: {id: "a/b c"}, disabled: false, textContent: "Cancel"};
el("instances").on.click({target: {closest: (sel) => sel === "button[data-id]" ? button : null}});
setTimeout(() => process.stdout.write(JSON.stringify({url: source.url, status: el("status").textContent,
  instances: el("instances").innerHTML, count: String(el("n-registrations").textContent), age: ageCell.textContent,
  posted, disabled: button.disabled, button: button.textContent})), 0);
`
	file := filepath.Join(t.TempDir(), "page.js")
	require.NoError(t, os.WriteFile(file, []byte(stubs+pageScript(t, page)+harness), 0o600))
	out, err := exec.CommandContext(context.Background(), node, file).CombinedOutput()
	require.NoError(t, err, "%s", out)
	var got map[string]any
	require.NoError(t, json.Unmarshal(out, &got), "%s", out)
	assert.Equal(t, "api/events", got["url"])
	assert.Equal(t, "live", got["status"])
	assert.Contains(t, got["instances"], "&lt;script&gt;alert(1)&lt;/script&gt;")
	assert.Equal(t, "2", got["count"])
	assert.Equal(t, "0s", got["age"])
	assert.Equal(t, "POST api/instances/a%2Fb%20c/cancel", got["posted"])
	assert.Equal(t, true, got["disabled"])
	assert.Equal(t, "Canceling\u2026", got["button"])
}

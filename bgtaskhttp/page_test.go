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

// TestPageScriptBuildsNoHTML reads the script: it builds no HTML, and puts the state
// into the page only as text, or as attributes that run nothing.
func TestPageScriptBuildsNoHTML(t *testing.T) {
	script := pageScript(t, serve(bgtaskhttp.New(newHost(t)), http.MethodGet, "/").Body.String())
	for _, s := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "createContextualFragment",
		"DOMParser", "srcdoc", "eval(", "Function(", "setAttributeNS", ".src", ".href", "${", "`"} {
		assert.NotContains(t, script, s)
	}
	sets := regexp.MustCompile(`setAttribute\(`).FindAllStringIndex(script, -1)
	require.NotEmpty(t, sets)
	safe := regexp.MustCompile(`^setAttribute\((name, |"(title|colspan|max|value|data-t|data-id)", )`)
	for _, at := range sets {
		assert.Regexp(t, safe, script[at[0]:], "at %q", script[at[0]:min(at[0]+40, len(script))])
	}
	// attr(node, name, v) is the one setAttribute of a name not spelled out: its callers must.
	attrs := regexp.MustCompile(`\battr\(`).FindAllStringIndex(script, -1)
	require.NotEmpty(t, attrs)
	safeAttr := regexp.MustCompile(`^attr\((node, name, v\)|\w+(\.\w+)?, "(title|max|value|data-t)", )`)
	for _, at := range attrs {
		assert.Regexp(t, safeAttr, script[at[0]:], "at %q", script[at[0]:min(at[0]+40, len(script))])
	}
	// No event handler is set but the EventSource's, which are the script's own functions.
	for _, m := range regexp.MustCompile(`\.on\w+\s*=[^=]`).FindAllString(script, -1) {
		assert.Regexp(t, `^\.on(open|error|message) =`, m)
	}
}

// fakeDOM is a stand-in for the browser's DOM, EventSource and fetch, to run the page's
// script in Node: just what the script uses, with html, which serializes an element's
// children as the browser does. getElementById makes the element it is asked for.
const fakeDOM = `
const escText = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const escAttr = (s) => s.replace(/&/g, "&amp;").replace(/"/g, "&quot;");
class FakeNode {
  constructor() { this.parentNode = null; }
  get nextSibling() { const c = this.parentNode ? this.parentNode.childNodes : []; return c[c.indexOf(this) + 1] || null; }
  remove() { if (this.parentNode) { const c = this.parentNode.childNodes; c.splice(c.indexOf(this), 1); this.parentNode = null; } }
}
class FakeText extends FakeNode {
  constructor(s) { super(); this.nodeName = "#text"; this.data = String(s); }
  get textContent() { return this.data; }
  set textContent(s) { this.data = String(s); }
  html() { return escText(this.data); }
}
class FakeElement extends FakeNode {
  constructor(tag) {
    super();
    this.tag = tag; this.nodeName = tag.toUpperCase(); this.attrs = new Map(); this.childNodes = []; this.on = {};
    this.dataset = new Proxy({}, {get: (_, k) => this.attrs.get("data-" + String(k)),
      set: (_, k, v) => { this.attrs.set("data-" + String(k), String(v)); return true; }});
  }
  setAttribute(k, v) { this.attrs.set(k, String(v)); }
  getAttribute(k) { return this.attrs.has(k) ? this.attrs.get(k) : null; }
  get className() { return this.attrs.get("class") || ""; }
  set className(v) { this.attrs.set("class", String(v)); }
  get firstChild() { return this.childNodes[0] || null; }
  insertBefore(n, ref) {
    n.remove(); n.parentNode = this;
    const i = ref ? this.childNodes.indexOf(ref) : -1;
    if (i < 0) this.childNodes.push(n); else this.childNodes.splice(i, 0, n);
    return n;
  }
  appendChild(n) { return this.insertBefore(n, null); }
  append(...ns) { for (const n of ns) this.appendChild(typeof n === "string" ? new FakeText(n) : n); }
  replaceChildren(...ns) { for (const c of [...this.childNodes]) c.remove(); this.append(...ns); }
  get textContent() { return this.childNodes.map((c) => c.textContent).join(""); }
  set textContent(s) { this.replaceChildren(); if (String(s) !== "") this.append(String(s)); }
  addEventListener(type, f) { this.on[type] = f; }
  closest(sel) {
    for (let e = this; e; e = e.parentNode) if (sel === "button[data-id]" && e.nodeName === "BUTTON" && e.dataset.id !== undefined) return e;
    return null;
  }
  *all() { yield this; for (const c of this.childNodes) if (c instanceof FakeElement) yield* c.all(); }
  html() { return this.childNodes.map((c) => c instanceof FakeText ? c.html() :
    "<" + c.tag + [...c.attrs].map(([k, v]) => " " + k + '="' + escAttr(v) + '"').join("") + ">" + c.html() + "</" + c.tag + ">").join(""); }
}
const els = {};
const byId = (id) => els[id] ??= new FakeElement("tbody");
let source, posted;
globalThis.document = {
  body: new FakeElement("body"),
  getElementById: byId,
  createElement: (tag) => new FakeElement(tag),
  querySelectorAll: (sel) => sel === ".age[data-t]" ? Object.values(els).flatMap((e) => [...e.all()])
    .filter((e) => e.className.split(" ").includes("age") && e.dataset.t !== undefined) : [],
};
globalThis.EventSource = class { constructor(url) { this.url = url; source = this; } };
globalThis.fetch = (url, opts) => { posted = opts.method + " " + url; return Promise.resolve({ok: true, status: 204}); };
globalThis.setInterval = () => {};
`

// runScript runs the page's script in Node, after fakeDOM and the body's data of page,
// and then harness, which writes a JSON object to stdout; it returns that object. It
// skips the test when Node is not installed.
func runScript(t *testing.T, page, harness string) map[string]any {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	now := regexp.MustCompile(`data-now="([^"]+)"`).FindStringSubmatch(page)
	require.Len(t, now, 2)
	body := `document.body.dataset.now = "` + now[1] + `"; document.body.dataset.cancel = "1";` + "\n"
	file := filepath.Join(t.TempDir(), "page.js")
	require.NoError(t, os.WriteFile(file, []byte(fakeDOM+body+pageScript(t, page)+"\n"+harness), 0o600))
	out, err := exec.CommandContext(context.Background(), node, file).CombinedOutput()
	require.NoError(t, err, "%s", out)
	var got map[string]any
	require.NoError(t, json.Unmarshal(out, &got), "%s", out)
	return got
}

// hostilePage returns the page and the state of hostileHost.
func hostilePage(t *testing.T) (page, state string) {
	synctest.Test(t, func(t *testing.T) {
		_, hd, release := hostileHost(t)
		defer release()
		synctest.Wait()
		page = serve(hd, http.MethodGet, "/").Body.String()
		state = serve(hd, http.MethodGet, "/api/state").Body.String()
	})
	return page, state
}

// TestPageScriptRendersLikeTheServer runs the page's script in Node, when it is installed,
// on the state of hostileHost: its rows show the names and errors as text, and are the
// server's rows, but for the ages, which the script fills in apart.
func TestPageScriptRendersLikeTheServer(t *testing.T) {
	page, state := hostilePage(t)
	rows := runScript(t, page, `
source.onmessage({data: JSON.stringify(`+state+`)});
process.stdout.write(JSON.stringify({instances: byId("instances").html(), registrations: byId("registrations").html(),
  recent: byId("recent").html()}));
`)
	for _, id := range []string{"instances", "registrations", "recent"} {
		require.IsType(t, "", rows[id])
		assertEscaped(t, rows[id].(string), id != "instances")
		assert.Equal(t, normalize(tbody(t, page, id)), normalize(rows[id].(string)), id)
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

// TestPageScriptWiring runs the page's script in Node, when it is installed, against
// fakeDOM: a message renders the rows and the counts, the ages are filled in, and a
// cancel button posts to its instance's URL. The next messages change the rows in place:
// a row, and its button, stay as long as their instance is listed, whatever its state.
func TestPageScriptWiring(t *testing.T) {
	page, state := hostilePage(t)
	got := runScript(t, page, `
const st = `+state+`;
source.onopen();
source.onmessage({data: JSON.stringify(st)});
const first = byId("instances").html();
const tr = byId("instances").firstChild, button = [...tr.all()].find((e) => e.nodeName === "BUTTON");
const id = button.dataset.id;
button.dataset.id = "a/b c"; // to check the escaping of the URL
byId("instances").on.click({target: button});
button.dataset.id = id;
setTimeout(() => {
  const after = {posted, disabled: button.disabled, button: button.textContent};
  st.instances[0].state = "Canceling"; st.instances[0].reason = "Abort"; st.instances[0].progress = 41;
  source.onmessage({data: JSON.stringify(st)});
  const canceling = byId("instances").html();
  const kept = byId("instances").firstChild === tr && [...tr.all()].includes(button);
  st.instances = [];
  source.onmessage({data: JSON.stringify(st)});
  process.stdout.write(JSON.stringify({url: source.url, status: byId("status").textContent, first, count: byId("n-registrations").textContent,
    age: document.querySelectorAll(".age[data-t]").map((e) => e.textContent), ...after, canceling, kept,
    gone: byId("instances").html(), n: byId("n-instances").textContent}));
}, 0);
`)
	assert.Equal(t, "api/events", got["url"])
	assert.Equal(t, "live", got["status"])
	assert.Contains(t, got["first"], "&lt;script&gt;alert(1)&lt;/script&gt;")
	assert.Equal(t, "2", got["count"])
	assert.Contains(t, got["age"], "0s")
	assert.NotContains(t, got["age"], "")
	assert.Equal(t, "POST api/instances/a%2Fb%20c/cancel", got["posted"])
	assert.Equal(t, true, got["disabled"])
	assert.Equal(t, "Canceling\u2026", got["button"])
	assert.Contains(t, got["canceling"], "Canceling (Abort)")
	assert.Contains(t, got["canceling"], `<progress max="100" value="41"></progress> 41%`)
	assert.Contains(t, got["canceling"], "Canceling\u2026</button>", "the button stays, and says how its cancel went")
	assert.Equal(t, true, got["kept"], "the row and its button are the same elements")
	assert.Equal(t, `<tr><td colspan="7" class="none">none</td></tr>`, got["gone"])
	assert.Equal(t, "0", got["n"])
}

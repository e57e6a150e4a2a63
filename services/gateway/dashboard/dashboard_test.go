package dashboard

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func get(t *testing.T, h http.Handler, method, target string, header map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var assetRef = regexp.MustCompile(`(?:href|src)="(/ui/assets/[0-9a-f]{16}/[^"]+)"`)

func TestIndexNamesVersionedAssets(t *testing.T) {
	h := Handler()
	resp := get(t, h, "GET", "/ui/", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/: %d", resp.StatusCode)
	}
	page := body(t, resp)
	if strings.Contains(page, assetsPlaceholder) {
		t.Fatal("index still contains the placeholder")
	}
	refs := assetRef.FindAllStringSubmatch(page, -1)
	if len(refs) != 2 {
		t.Fatalf("index references %d versioned assets, want the stylesheet and main.js: %s", len(refs), page)
	}
	for _, ref := range refs {
		r := get(t, h, "GET", ref[1], nil)
		if r.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", ref[1], r.StatusCode)
		}
		if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("%s Cache-Control %q, want immutable", ref[1], cc)
		}
	}
}

func TestHeaders(t *testing.T) {
	h := Handler().(*handler)
	tests := []struct {
		target      string
		status      int
		contentType string
		cache       string
	}{
		{"/ui/", 200, "text/html; charset=utf-8", "no-cache"},
		{"/ui/index.html", 200, "text/html; charset=utf-8", "no-cache"},
		{h.assetsBase + "js/main.js", 200, "text/javascript; charset=utf-8", "public, max-age=31536000, immutable"},
		{h.assetsBase + "js/views/apps.js", 200, "text/javascript; charset=utf-8", "public, max-age=31536000, immutable"},
		{h.assetsBase + "app.css", 200, "text/css; charset=utf-8", "public, max-age=31536000, immutable"},
		{h.assetsBase + "index.html", 404, "", "no-store"},
		{"/ui/assets/0000000000000000/js/main.js", 404, "", "no-store"},
		{"/ui/js/main.js", 404, "", "no-store"},
		{h.assetsBase + "../dashboard.go", 404, "", "no-store"},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			resp := get(t, h, "GET", tc.target, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.contentType != "" && resp.Header.Get("Content-Type") != tc.contentType {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tc.contentType)
			}
			if got := resp.Header.Get("Cache-Control"); got != tc.cache {
				t.Errorf("Cache-Control %q, want %q", got, tc.cache)
			}
			if got := resp.Header.Get("Content-Security-Policy"); got != ContentSecurityPolicy {
				t.Errorf("CSP %q", got)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", got)
			}
		})
	}
}

func TestCSPIsStrict(t *testing.T) {
	for _, banned := range []string{"unsafe-inline", "unsafe-eval", "*", "http:", "https:"} {
		if strings.Contains(ContentSecurityPolicy, banned) {
			t.Errorf("CSP allows %q: %s", banned, ContentSecurityPolicy)
		}
	}
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(ContentSecurityPolicy, want) {
			t.Errorf("CSP lacks %q", want)
		}
	}
}

func TestConditionalAndMethods(t *testing.T) {
	h := Handler().(*handler)
	target := h.assetsBase + "js/api.js"
	first := get(t, h, "GET", target, nil)
	etag := first.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if again := get(t, h, "GET", target, map[string]string{"If-None-Match": etag}); again.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", again.StatusCode)
	}
	if idx := get(t, h, "GET", "/ui/", nil); idx.Header.Get("ETag") == "" {
		t.Error("index has no ETag")
	} else if again := get(t, h, "GET", "/ui/", map[string]string{"If-None-Match": idx.Header.Get("ETag")}); again.StatusCode != http.StatusNotModified {
		t.Errorf("index If-None-Match: %d, want 304", again.StatusCode)
	}
	if head := get(t, h, "HEAD", "/ui/", nil); head.StatusCode != http.StatusOK || body(t, head) != "" {
		t.Errorf("HEAD /ui/: %d", head.StatusCode)
	}
	if post := get(t, h, "POST", "/ui/", nil); post.StatusCode != http.StatusMethodNotAllowed || post.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /ui/: %d Allow %q", post.StatusCode, post.Header.Get("Allow"))
	}
	if redirect := get(t, h, "GET", "/ui", nil); redirect.StatusCode != http.StatusMovedPermanently || redirect.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d to %q", redirect.StatusCode, redirect.Header.Get("Location"))
	}
}

func TestDigestFollowsContent(t *testing.T) {
	files := func(js string) fstest.MapFS {
		return fstest.MapFS{
			"static/index.html": {Data: []byte(`<script type="module" src="{{ASSETS}}main.js"></script>`)},
			"static/main.js":    {Data: []byte(js)},
		}
	}
	a, err := newHandler(files("console.log(1)"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := newHandler(files("console.log(2)"))
	if err != nil {
		t.Fatal(err)
	}
	if a.assetsBase == b.assetsBase {
		t.Errorf("different contents share the assets path %s", a.assetsBase)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"no index":          {"static/main.js": {Data: []byte("x")}},
		"no placeholder":    {"static/index.html": {Data: []byte("<p>")}},
		"unknown file type": {"static/index.html": {Data: []byte("{{ASSETS}}")}, "static/x.exe": {Data: []byte("x")}},
	} {
		if _, err := newHandler(fsys); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// importRef finds static ES module imports.
var importRef = regexp.MustCompile(`(?m)^\s*import\s[^'"]*['"]([^'"]+)['"]`)

// TestModulesResolve checks that every relative import names an embedded
// module, so a renamed file breaks the build's tests rather than the page.
func TestModulesResolve(t *testing.T) {
	root, err := fs.Sub(static, "static")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(p) != ".js" {
			return err
		}
		src, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		for _, m := range importRef.FindAllStringSubmatch(string(src), -1) {
			if !strings.HasPrefix(m[1], "./") && !strings.HasPrefix(m[1], "../") {
				t.Errorf("%s imports %q: only relative imports of embedded modules are allowed", p, m[1])
				continue
			}
			target := path.Join(path.Dir(p), m[1])
			if _, err := fs.Stat(root, target); err != nil {
				t.Errorf("%s imports %q: %s is not embedded", p, m[1], target)
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("found only %d imports; is the pattern broken?", n)
	}
}

// TestNoMarkupFromStrings keeps server data out of the HTML parser: the
// scripts build the page with DOM calls and text only.
func TestNoMarkupFromStrings(t *testing.T) {
	banned := regexp.MustCompile(`\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(|createContextualFragment|DOMParser`)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(p) != ".js" {
			return err
		}
		src, err := fs.ReadFile(static, p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(src), "\n") {
			if banned.MatchString(line) {
				t.Errorf("%s:%d builds markup from a string: %s", p, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

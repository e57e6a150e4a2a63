// Package dashboard serves the suite's web dashboard: static HTML, CSS and
// JavaScript modules embedded in the binary, which call the gateway's REST
// API from the browser with the token a person logs in with.
//
// The handler expects to be mounted at /ui/. The page itself (/ui/) is
// revalidated on every load; the assets it loads live under
// /ui/assets/<digest>/, where digest is a hash of every embedded file, so
// they are cached for good and a new build is a new URL.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Prefix is where the dashboard is mounted.
const Prefix = "/ui/"

// assetsPlaceholder in index.html is replaced with the assets' base path.
const assetsPlaceholder = "{{ASSETS}}"

// ContentSecurityPolicy allows the page only its own scripts, styles and
// API calls: no inline script or style, no other origin, no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

type handler struct {
	index      asset
	assets     map[string]asset // by path below /ui/assets/<digest>/
	assetsBase string           // /ui/assets/<digest>/
}

// Handler serves the dashboard below /ui/.
func Handler() http.Handler {
	h, err := newHandler(static)
	if err != nil {
		// The embedded files are part of the binary; failing to read them
		// is a build defect, caught by this package's tests.
		panic(fmt.Sprintf("dashboard: %v", err))
	}
	return h
}

func newHandler(fsys fs.FS) (*handler, error) {
	root, err := fs.Sub(fsys, "static")
	if err != nil {
		return nil, fmt.Errorf("open embedded files: %w", err)
	}
	h := &handler{assets: map[string]asset{}}
	var indexBody []byte
	digest := sha256.New()
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, p)
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		fmt.Fprintf(digest, "%s\x00%d\x00", p, len(body))
		digest.Write(body)
		if p == "index.html" {
			indexBody = body
			return nil
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("%s: no content type for %q files", p, path.Ext(p))
		}
		h.assets[p] = asset{body: body, contentType: ct, etag: etagOf(body)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk embedded files: %w", err)
	}
	if indexBody == nil {
		return nil, fmt.Errorf("index.html is missing")
	}
	if !bytes.Contains(indexBody, []byte(assetsPlaceholder)) {
		return nil, fmt.Errorf("index.html does not reference %s", assetsPlaceholder)
	}
	h.assetsBase = Prefix + "assets/" + hex.EncodeToString(digest.Sum(nil))[:16] + "/"
	body := bytes.ReplaceAll(indexBody, []byte(assetsPlaceholder), []byte(h.assetsBase))
	h.index = asset{body: body, contentType: "text/html; charset=utf-8", etag: etagOf(body)}
	return h, nil
}

var contentTypes = map[string]string{
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".json": "application/json",
	".png":  "image/png",
	".ico":  "image/x-icon",
}

func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	hdr.Set("Cross-Origin-Resource-Policy", "same-origin")

	p := r.URL.Path
	switch {
	case p == strings.TrimSuffix(Prefix, "/"):
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
	case p == Prefix || p == Prefix+"index.html":
		// The page names the current assets: always revalidate it.
		hdr.Set("Cache-Control", "no-cache")
		h.serve(w, r, h.index)
	case strings.HasPrefix(p, h.assetsBase):
		a, ok := h.assets[strings.TrimPrefix(p, h.assetsBase)]
		if !ok {
			h.notFound(w)
			return
		}
		hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
		h.serve(w, r, a)
	default:
		// Unknown paths, and assets of another build, are never cached.
		h.notFound(w)
	}
}

func (h *handler) notFound(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, "not found", http.StatusNotFound)
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request, a asset) {
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("ETag", a.etag)
	// ServeContent answers If-None-Match with 304 and handles HEAD and
	// ranges; the ETag alone validates (no Last-Modified).
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

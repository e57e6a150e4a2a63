package healthchecker

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Limits of a target's settings.
const (
	DefaultInterval         = 10 * time.Second
	DefaultTimeout          = 5 * time.Second
	MinInterval             = 100 * time.Millisecond
	MaxInterval             = 24 * time.Hour
	MaxInitialDelay         = 24 * time.Hour
	MaxThreshold            = 100
	DefaultFailureThreshold = 3
	DefaultSuccessThreshold = 1
	DefaultTLSExpiryWarning = 7 * 24 * time.Hour
	maxNameLen              = 63
	maxLabels               = 64
	maxLabelLen             = 256
	maxHeaders              = 64
	maxBodyLen              = 64 << 10
	maxPatternLen           = 4096
	maxArgv                 = 256
	maxArgLen               = 4096
)

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// validName reports why name is not a DNS-1123 label, or "".
func validName(name string) string {
	switch {
	case name == "":
		return "is required"
	case len(name) > maxNameLen:
		return fmt.Sprintf("must be at most %d characters, got %d", maxNameLen, len(name))
	case !dns1123Label.MatchString(name):
		return fmt.Sprintf("%q must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return ""
}

var httpTokenRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// normalize fills defaults in t (in place) and validates it. Output-only
// fields are cleared. It returns every problem found, each naming its field.
func normalize(t *hcv1.Target) (*compiledCheck, error) {
	ve := validation.New("target")
	if t == nil {
		ve.Add("target", "is required")
		return nil, ve
	}
	t.Status, t.CreateTime, t.UpdateTime = nil, nil, nil
	if why := validName(t.GetName()); why != "" {
		ve.Add("target.name", "%s", why)
	}
	if t.GetGroup() != "" {
		if why := validName(t.GetGroup()); why != "" {
			ve.Add("target.group", "%s", why)
		}
	}
	if len(t.GetLabels()) > maxLabels {
		ve.Add("target.labels", "at most %d labels", maxLabels)
	}
	for k, v := range t.GetLabels() {
		if k == "" || len(k) > maxLabelLen || len(v) > maxLabelLen {
			ve.Add("target.labels", "label keys must be 1-%d and values at most %d characters", maxLabelLen, maxLabelLen)
			break
		}
	}

	_, isTTL := t.GetCheck().(*hcv1.Target_Ttl)
	interval := durationOr(ve, "target.interval", t.GetInterval(), DefaultInterval)
	if interval < MinInterval || interval > MaxInterval {
		ve.Add("target.interval", "must be between %s and %s, got %s", MinInterval, MaxInterval, interval)
	}
	timeout := durationOr(ve, "target.timeout", t.GetTimeout(), min(DefaultTimeout, interval))
	if timeout <= 0 || (timeout > interval && interval > 0) {
		ve.Add("target.timeout", "must be positive and at most the interval (%s), got %s", interval, timeout)
	}
	delay := durationOr(ve, "target.initial_delay", t.GetInitialDelay(), 0)
	if delay < 0 || delay > MaxInitialDelay {
		ve.Add("target.initial_delay", "must be between 0 and %s, got %s", MaxInitialDelay, delay)
	}
	defFail := uint32(DefaultFailureThreshold)
	if isTTL {
		defFail = 1
	}
	if t.FailureThreshold == 0 {
		t.FailureThreshold = defFail
	}
	if t.SuccessThreshold == 0 {
		t.SuccessThreshold = DefaultSuccessThreshold
	}
	if t.FailureThreshold > MaxThreshold {
		ve.Add("target.failure_threshold", "must be at most %d, got %d", MaxThreshold, t.FailureThreshold)
	}
	if t.SuccessThreshold > MaxThreshold {
		ve.Add("target.success_threshold", "must be at most %d, got %d", MaxThreshold, t.SuccessThreshold)
	}
	t.Interval = durationpb.New(interval)
	t.Timeout = durationpb.New(timeout)
	t.InitialDelay = durationpb.New(delay)

	cc := &compiledCheck{}
	switch c := t.GetCheck().(type) {
	case *hcv1.Target_Http:
		validateHTTP(ve, c.Http, cc)
	case *hcv1.Target_Tcp:
		if c.Tcp == nil || c.Tcp.GetAddress() == "" {
			ve.Add("target.tcp.address", "is required (host:port)")
		} else if why := validHostPort(c.Tcp.GetAddress()); why != "" {
			ve.Add("target.tcp.address", "%s", why)
		}
	case *hcv1.Target_Grpc:
		if c.Grpc == nil || c.Grpc.GetAddress() == "" {
			ve.Add("target.grpc.address", "is required (host:port)")
		} else if why := validHostPort(c.Grpc.GetAddress()); why != "" {
			ve.Add("target.grpc.address", "%s", why)
		}
	case *hcv1.Target_Exec:
		validateExec(ve, c.Exec)
	case *hcv1.Target_Ttl:
		ttl := durationOr(ve, "target.ttl.ttl", c.Ttl.GetTtl(), 0)
		if ttl < MinInterval || ttl > MaxInterval {
			ve.Add("target.ttl.ttl", "must be between %s and %s, got %s", MinInterval, MaxInterval, ttl)
		}
	case nil:
		ve.Add("target.check", "one of http, tcp, grpc, exec or ttl is required")
	}
	if err := ve.Err(); err != nil {
		return nil, err
	}
	return cc, nil
}

// durationOr converts d, recording an error for an invalid value, and
// returns def when d is unset.
func durationOr(ve *ValidationError, field string, d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	if err := d.CheckValid(); err != nil {
		ve.Add(field, "invalid duration: %v", err)
		return def
	}
	v := d.AsDuration()
	if v == 0 {
		return def
	}
	return v
}

func validHostPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%q is not host:port: %v", addr, err)
	}
	if host == "" {
		return fmt.Sprintf("%q has no host", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Sprintf("%q: port must be 1-65535", addr)
	}
	return ""
}

func validateHTTP(ve *ValidationError, h *hcv1.HttpCheck, cc *compiledCheck) {
	if h == nil || h.GetUrl() == "" {
		ve.Add("target.http.url", "is required")
		return
	}
	u, err := url.Parse(h.GetUrl())
	switch {
	case err != nil:
		ve.Add("target.http.url", "invalid URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		ve.Add("target.http.url", "scheme must be http or https, got %q", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		ve.Add("target.http.url", "%q has no host", h.GetUrl())
	case u.Port() != "":
		if p, perr := strconv.Atoi(u.Port()); perr != nil || p < 1 || p > 65535 {
			ve.Add("target.http.url", "port must be 1-65535")
		}
	}
	if h.Method == "" {
		h.Method = http.MethodGet
	}
	h.Method = strings.ToUpper(h.Method)
	if !httpTokenRe.MatchString(h.Method) {
		ve.Add("target.http.method", "%q is not an HTTP method", h.Method)
	}
	if len(h.GetHeaders()) > maxHeaders {
		ve.Add("target.http.headers", "at most %d headers", maxHeaders)
	}
	for k, v := range h.GetHeaders() {
		if !httpTokenRe.MatchString(k) {
			ve.Add("target.http.headers", "%q is not a valid header name", k)
			break
		}
		if !httpguts.ValidHeaderFieldValue(v) {
			ve.Add("target.http.headers", "value of %q contains a line break or another control character", k)
			break
		}
	}
	if len(h.GetBody()) > maxBodyLen {
		ve.Add("target.http.body", "at most %d bytes", maxBodyLen)
	}
	for i, s := range h.GetExpectedStatuses() {
		if s < 100 || s > 599 {
			ve.Add(fmt.Sprintf("target.http.expected_statuses[%d]", i), "must be 100-599, got %d", s)
		}
	}
	if len(h.GetBodyContains()) > maxPatternLen {
		ve.Add("target.http.body_contains", "at most %d bytes", maxPatternLen)
	}
	if p := h.GetBodyRegex(); p != "" {
		if len(p) > maxPatternLen {
			ve.Add("target.http.body_regex", "at most %d bytes", maxPatternLen)
		} else if re, err := regexp.Compile(p); err != nil {
			ve.Add("target.http.body_regex", "invalid RE2 expression: %v", err)
		} else {
			cc.bodyRegex = re
		}
	}
	if c := h.GetCondition(); c != "" {
		if len(c) > maxPatternLen {
			ve.Add("target.http.condition", "at most %d bytes", maxPatternLen)
		} else if prg, err := compileCondition(c); err != nil {
			ve.Add("target.http.condition", "%v", err)
		} else {
			cc.condition = prg
		}
	}
	if d := durationOr(ve, "target.http.max_latency", h.GetMaxLatency(), 0); d < 0 {
		ve.Add("target.http.max_latency", "must not be negative")
	}
	if d := durationOr(ve, "target.http.tls_expiry_warning", h.GetTlsExpiryWarning(), 0); d < 0 {
		ve.Add("target.http.tls_expiry_warning", "must not be negative")
	}
}

func validateExec(ve *ValidationError, e *hcv1.ExecCheck) {
	if e == nil || len(e.GetArgv()) == 0 || e.GetArgv()[0] == "" {
		ve.Add("target.exec.argv", "is required: the program and its arguments")
		return
	}
	if len(e.GetArgv()) > maxArgv {
		ve.Add("target.exec.argv", "at most %d arguments", maxArgv)
	}
	for i, a := range e.GetArgv() {
		if len(a) > maxArgLen || strings.ContainsRune(a, 0) {
			ve.Add(fmt.Sprintf("target.exec.argv[%d]", i), "must be at most %d bytes without NUL", maxArgLen)
		}
	}
	for k, v := range e.GetEnv() {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			ve.Add("target.exec.env", "%q is not a valid environment variable", k)
			break
		}
	}
}

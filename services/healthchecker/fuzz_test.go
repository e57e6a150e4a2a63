package healthchecker

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Check kinds FuzzNormalize builds from its kind argument.
const (
	fuzzHTTP = iota
	fuzzTCP
	fuzzGRPC
	fuzzExec
	fuzzTTL
	fuzzNoCheck
	fuzzEmptyHTTP
	fuzzKinds
)

func FuzzNormalize(f *testing.F) {
	type seed struct {
		name, group, url, method, headerKey, headerValue, regex, condition string
		interval, timeout                                                  int64
		argv                                                               string
		kind                                                               uint8
		failure, success                                                   uint32
	}
	seeds := []seed{
		{name: "web", url: "http://127.0.0.1:8080/healthz", kind: fuzzHTTP},
		{name: "web", group: "shop", url: "https://example.com:8443/h?x=1", method: "post", headerKey: "X-Test", headerValue: "1",
			regex: `"ok"`, condition: `status == 200 && json.status == "ok"`, interval: int64(time.Second), timeout: int64(500 * time.Millisecond), kind: fuzzHTTP, failure: 3, success: 2},
		{name: "db", url: "db.internal:5432", kind: fuzzTCP},
		{name: "api", url: "[::1]:7070", kind: fuzzGRPC},
		{name: "disk", argv: "sh\n-c\nexit 0", kind: fuzzExec},
		{name: "job", interval: int64(time.Minute), kind: fuzzTTL},
		// Bad ones.
		{name: "Web", url: "ftp://x", kind: fuzzHTTP},
		{name: strings.Repeat("a", 64), url: "http://:0/", kind: fuzzHTTP},
		{name: "web", url: "http://[::1", method: "GE T", headerKey: "X Bad", headerValue: "a\r\nb", regex: "(", condition: "1 + 2", kind: fuzzHTTP},
		{name: "web", url: "http://h/", condition: `json.a.b.c == [1, 2][5]`, kind: fuzzHTTP},
		{name: "web", url: "http://h/", interval: -1, timeout: 1 << 62, kind: fuzzHTTP},
		{name: "web", url: "http://h/", interval: int64(time.Second), timeout: int64(2 * time.Second), kind: fuzzHTTP, failure: 101},
		{name: "db", url: "db", kind: fuzzTCP},
		{name: "disk", argv: "", kind: fuzzExec},
		{name: "disk", argv: "check\na\x00b", kind: fuzzExec},
		{name: "job", interval: 1, kind: fuzzTTL},
		{name: "none", kind: fuzzNoCheck},
		{name: "empty", kind: fuzzEmptyHTTP},
	}
	for _, s := range seeds {
		f.Add(s.name, s.group, s.url, s.method, s.headerKey, s.headerValue, s.regex, s.condition, s.interval, s.timeout, s.argv, s.kind, s.failure, s.success)
	}
	f.Fuzz(func(t *testing.T, name, group, rawURL, method, headerKey, headerValue, regex, condition string,
		interval, timeout int64, argv string, kind uint8, failure, success uint32,
	) {
		tg := &hcv1.Target{
			Name:             name,
			Group:            group,
			Interval:         fuzzDuration(interval),
			Timeout:          fuzzDuration(timeout),
			FailureThreshold: failure,
			SuccessThreshold: success,
		}
		switch kind % fuzzKinds {
		case fuzzHTTP:
			h := &hcv1.HttpCheck{Url: rawURL, Method: method, BodyRegex: regex, Condition: condition}
			if headerKey != "" || headerValue != "" {
				h.Headers = map[string]string{headerKey: headerValue}
			}
			tg.Check = &hcv1.Target_Http{Http: h}
		case fuzzTCP:
			tg.Check = &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: rawURL}}
		case fuzzGRPC:
			tg.Check = &hcv1.Target_Grpc{Grpc: &hcv1.GrpcCheck{Address: rawURL, Service: method}}
		case fuzzExec:
			var args []string
			if argv != "" {
				args = strings.Split(argv, "\n")
			}
			tg.Check = &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{Argv: args, Env: map[string]string{headerKey: headerValue}}}
		case fuzzTTL:
			tg.Check = &hcv1.Target_Ttl{Ttl: &hcv1.TtlCheck{Ttl: fuzzDuration(interval)}}
		case fuzzEmptyHTTP:
			tg.Check = &hcv1.Target_Http{}
		}
		cc, err := normalize(tg)
		checkNormalized(t, tg, cc, err)
	})
}

func fuzzDuration(n int64) *durationpb.Duration {
	if n == 0 {
		return nil
	}
	return durationpb.New(time.Duration(n))
}

func FuzzProtoTargetDecode(f *testing.F) {
	seeds := []*hcv1.Target{
		testHTTPTarget("web", "http://127.0.0.1:8080/healthz"),
		{
			Name: "web", Group: "shop", NonCritical: true, Labels: map[string]string{"team": "a"},
			Interval: pbDur(time.Second), Timeout: pbDur(time.Second), InitialDelay: pbDur(time.Minute),
			FailureThreshold: 2, SuccessThreshold: 2,
			Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{
				Url: "https://example.com/", Method: "POST", Headers: map[string]string{"X": "y"}, Body: "{}",
				ExpectedStatuses: []uint32{200, 204}, BodyContains: "ok", BodyRegex: "o+k", Condition: "json.ok",
				MaxLatency: pbDur(time.Second), TlsExpiryWarning: pbDur(time.Hour), TlsSkipVerify: true, FollowRedirects: true,
			}},
		},
		{Name: "db", Check: &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "db:5432"}}},
		{Name: "api", Check: &hcv1.Target_Grpc{Grpc: &hcv1.GrpcCheck{Address: "api:7070", Service: "x", Tls: true}}},
		{Name: "disk", Check: &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{Argv: []string{"df", "-h"}, Env: map[string]string{"A": "b"}, WorkingDir: "/"}}},
		{Name: "job", Check: &hcv1.Target_Ttl{Ttl: &hcv1.TtlCheck{Ttl: pbDur(time.Minute)}}},
		// Bad ones.
		{Name: "Bad", Interval: &durationpb.Duration{Seconds: 1, Nanos: -5}, Check: &hcv1.Target_Http{}},
		{Name: "x", Timeout: &durationpb.Duration{Seconds: 1 << 62}, Check: &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{}}},
		{Name: "x", Check: &hcv1.Target_Ttl{}},
		{Name: "x", Status: &hcv1.TargetStatus{State: stateCritical}},
	}
	for _, s := range seeds {
		data, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte{0x52, 0x02, 0x0a, 0x00}) // http {url: ""}
	f.Fuzz(func(t *testing.T, data []byte) {
		tg := &hcv1.Target{}
		if err := proto.Unmarshal(data, tg); err != nil {
			return
		}
		cc, err := normalize(tg)
		checkNormalized(t, tg, cc, err)
		if err == nil {
			if _, err := proto.Marshal(tg); err != nil {
				t.Errorf("normalized target does not marshal: %v", err)
			}
		}
	})
}

func FuzzCondition(f *testing.F) {
	seeds := []struct {
		expr string
		body string
	}{
		{`status == 200`, ``},
		{`json.status == "ok" && size(json.items) > 0`, `{"status":"ok","items":[1]}`},
		{`headers["content-type"].startsWith("application/json")`, `{}`},
		{`body.contains("ok") || body.matches("^up")`, `up and ok`},
		{`json.a.b.c`, `{"a":{"b":{"c":true}}}`},
		{`json[0] == 1`, `[1,2,3]`},
		{`json.n / 0 == 1`, `{"n": 1}`},
		{`int(json.n) > 2`, `{"n": 1e300}`},
		{`json.items.all(x, x > 0)`, `{"items":[1,"a",null]}`},
		{`[1,2,3].map(x, [1,2,3].map(y, [1,2,3].map(z, x*y*z))).size() > 0`, ``},
		{`string(json) != ""`, `null`},
		{`json`, `true`},
		{`json`, `"not a bool"`},
		{`dyn(status)`, ``},
		{`body.matches(json.re)`, `{"re":"("}`},
		{`1 + 2`, ``},
		{`status ==`, ``},
	}
	for _, s := range seeds {
		f.Add(s.expr, []byte(s.body), int64(200), "content-type", "application/json")
	}
	f.Fuzz(func(t *testing.T, expr string, body []byte, status int64, headerKey, headerValue string) {
		if len(expr) > maxPatternLen {
			return // validation refuses longer conditions
		}
		prg, err := compileCondition(expr)
		if err != nil {
			if prg != nil {
				t.Errorf("compileCondition(%q) returned a program with error %v", expr, err)
			}
			return
		}
		start := time.Now()
		_, _ = evalCondition(prg, int(status), map[string]string{headerKey: headerValue}, body)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("evaluating %q took %s: the cost limit did not bound it", expr, d)
		}
	})
}

// checkNormalized asserts what normalize promises: on error a validation
// error naming target fields and no compiled check; on success a target
// within every limit, which normalizes again to itself.
func checkNormalized(t *testing.T, tg *hcv1.Target, cc *compiledCheck, err error) {
	t.Helper()
	if err != nil {
		var ve *ValidationError
		if !errors.As(err, &ve) || len(ve.Fields) == 0 {
			t.Fatalf("normalize error %v (%T) is not a validation error with fields", err, err)
		}
		for _, fe := range ve.Fields {
			if !strings.HasPrefix(fe.Field, "target") || fe.Reason == "" {
				t.Errorf("field error %q: %q does not name a target field with a reason", fe.Field, fe.Reason)
			}
		}
		if cc != nil {
			t.Errorf("compiled check returned with error %v", err)
		}
		return
	}
	if cc == nil {
		t.Fatal("normalize returned neither an error nor a compiled check")
	}
	if !isDNSLabel(tg.GetName()) {
		t.Errorf("accepted name %q is not a DNS-1123 label", tg.GetName())
	}
	if g := tg.GetGroup(); g != "" && !isDNSLabel(g) {
		t.Errorf("accepted group %q is not a DNS-1123 label", g)
	}
	if tg.Status != nil || tg.CreateTime != nil || tg.UpdateTime != nil {
		t.Errorf("output-only fields kept: %v", tg)
	}
	for _, d := range []*durationpb.Duration{tg.GetInterval(), tg.GetTimeout(), tg.GetInitialDelay()} {
		if err := d.CheckValid(); err != nil {
			t.Errorf("normalized duration %v: %v", d, err)
		}
	}
	interval, timeout := tg.GetInterval().AsDuration(), tg.GetTimeout().AsDuration()
	if interval < MinInterval || interval > MaxInterval {
		t.Errorf("accepted interval %s outside [%s, %s]", interval, MinInterval, MaxInterval)
	}
	if timeout <= 0 || timeout > interval {
		t.Errorf("accepted timeout %s outside (0, interval %s]", timeout, interval)
	}
	if d := tg.GetInitialDelay().AsDuration(); d < 0 || d > MaxInitialDelay {
		t.Errorf("accepted initial_delay %s outside [0, %s]", d, MaxInitialDelay)
	}
	for _, th := range []uint32{tg.GetFailureThreshold(), tg.GetSuccessThreshold()} {
		if th < 1 || th > MaxThreshold {
			t.Errorf("accepted threshold %d outside [1, %d]", th, MaxThreshold)
		}
	}
	switch c := tg.GetCheck().(type) {
	case *hcv1.Target_Http:
		checkNormalizedHTTP(t, c.Http, cc)
	case *hcv1.Target_Tcp:
		checkHostPort(t, c.Tcp.GetAddress())
	case *hcv1.Target_Grpc:
		checkHostPort(t, c.Grpc.GetAddress())
	case *hcv1.Target_Exec:
		argv := c.Exec.GetArgv()
		if len(argv) == 0 || argv[0] == "" || len(argv) > maxArgv {
			t.Errorf("accepted argv %q", argv)
		}
		for _, a := range argv {
			if strings.ContainsRune(a, 0) {
				t.Errorf("accepted argument %q with NUL", a)
			}
		}
		for k, v := range c.Exec.GetEnv() {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
				t.Errorf("accepted env %q=%q", k, v)
			}
		}
	case *hcv1.Target_Ttl:
		if d := c.Ttl.GetTtl().AsDuration(); d < MinInterval || d > MaxInterval {
			t.Errorf("accepted ttl %s", d)
		}
	default:
		t.Errorf("accepted a target without a check: %v", tg)
	}

	again := proto.CloneOf(tg)
	if _, err := normalize(again); err != nil {
		t.Fatalf("a normalized target fails to normalize again: %v\n%v", err, tg)
	}
	if !proto.Equal(again, tg) {
		t.Errorf("normalize is not idempotent:\n first %v\nsecond %v", tg, again)
	}
}

func checkNormalizedHTTP(t *testing.T, h *hcv1.HttpCheck, cc *compiledCheck) {
	t.Helper()
	u, err := url.Parse(h.GetUrl())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		t.Errorf("accepted URL %q (%v)", h.GetUrl(), err)
	}
	if h.GetMethod() == "" || h.GetMethod() != strings.ToUpper(h.GetMethod()) {
		t.Errorf("accepted method %q is not upper case", h.GetMethod())
	}
	// What validation accepts, the probe must be able to turn into a request.
	if _, err := http.NewRequest(h.GetMethod(), h.GetUrl(), nil); err != nil {
		t.Errorf("accepted method %q and URL %q do not make a request: %v", h.GetMethod(), h.GetUrl(), err)
	}
	for k, v := range h.GetHeaders() {
		if k == "" || strings.ContainsAny(k, " \t\r\n:\x00") || strings.ContainsAny(v, "\r\n\x00") {
			t.Errorf("accepted header %q: %q", k, v)
		}
	}
	for _, s := range h.GetExpectedStatuses() {
		if s < 100 || s > 599 {
			t.Errorf("accepted expected status %d", s)
		}
	}
	if (h.GetBodyRegex() != "") != (cc.bodyRegex != nil) {
		t.Errorf("body_regex %q compiled to %v", h.GetBodyRegex(), cc.bodyRegex)
	}
	if (h.GetCondition() != "") != (cc.condition != nil) {
		t.Errorf("condition %q compiled to %v", h.GetCondition(), cc.condition)
	}
}

func checkHostPort(t *testing.T, addr string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		t.Errorf("accepted address %q (%v)", addr, err)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		t.Errorf("accepted address %q with port %q", addr, port)
	}
}

// isDNSLabel is an independent statement of the DNS-1123 label rule.
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

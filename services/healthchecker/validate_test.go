package healthchecker

import (
	"errors"
	"strings"
	"testing"
	"time"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestNormalizeDefaults(t *testing.T) {
	tests := []struct {
		name   string
		target *hcv1.Target
		check  func(t *testing.T, got *hcv1.Target)
	}{
		{
			name:   "http target gets interval, timeout, thresholds and GET",
			target: testHTTPTarget("web", "http://127.0.0.1:8080/healthz"),
			check: func(t *testing.T, got *hcv1.Target) {
				wantDurations(t, got, DefaultInterval, DefaultTimeout, 0)
				wantThresholds(t, got, DefaultFailureThreshold, DefaultSuccessThreshold)
				if m := got.GetHttp().GetMethod(); m != "GET" {
					t.Errorf("method = %q, want GET", m)
				}
			},
		},
		{
			name: "timeout defaults to the interval when that is shorter than 5s",
			target: func() *hcv1.Target {
				tg := testHTTPTarget("web", "https://example.com/")
				tg.Interval = pbDur(2 * time.Second)
				return tg
			}(),
			check: func(t *testing.T, got *hcv1.Target) { wantDurations(t, got, 2*time.Second, 2*time.Second, 0) },
		},
		{
			name: "zero durations count as unset",
			target: func() *hcv1.Target {
				tg := testHTTPTarget("web", "https://example.com/")
				tg.Interval, tg.Timeout, tg.InitialDelay = pbDur(0), pbDur(0), pbDur(0)
				return tg
			}(),
			check: func(t *testing.T, got *hcv1.Target) { wantDurations(t, got, DefaultInterval, DefaultTimeout, 0) },
		},
		{
			name: "explicit values are kept",
			target: func() *hcv1.Target {
				tg := testHTTPTarget("web", "https://example.com/")
				tg.Interval, tg.Timeout, tg.InitialDelay = pbDur(time.Minute), pbDur(30*time.Second), pbDur(time.Hour)
				tg.FailureThreshold, tg.SuccessThreshold = 5, 2
				return tg
			}(),
			check: func(t *testing.T, got *hcv1.Target) {
				wantDurations(t, got, time.Minute, 30*time.Second, time.Hour)
				wantThresholds(t, got, 5, 2)
			},
		},
		{
			name: "the method is upper-cased",
			target: func() *hcv1.Target {
				tg := testHTTPTarget("web", "https://example.com/")
				tg.GetHttp().Method = "head"
				return tg
			}(),
			check: func(t *testing.T, got *hcv1.Target) {
				if m := got.GetHttp().GetMethod(); m != "HEAD" {
					t.Errorf("method = %q, want HEAD", m)
				}
			},
		},
		{
			name:   "ttl target fails after one missed heartbeat by default",
			target: &hcv1.Target{Name: "batch", Check: &hcv1.Target_Ttl{Ttl: &hcv1.TtlCheck{Ttl: pbDur(time.Minute)}}},
			check:  func(t *testing.T, got *hcv1.Target) { wantThresholds(t, got, 1, DefaultSuccessThreshold) },
		},
		{
			name: "output-only fields are cleared",
			target: func() *hcv1.Target {
				tg := testHTTPTarget("web", "https://example.com/")
				tg.Status = &hcv1.TargetStatus{State: hcv1.CheckState_CHECK_STATE_CRITICAL}
				tg.CreateTime, tg.UpdateTime = timestamppb.Now(), timestamppb.Now()
				return tg
			}(),
			check: func(t *testing.T, got *hcv1.Target) {
				if got.Status != nil || got.CreateTime != nil || got.UpdateTime != nil {
					t.Errorf("status/create_time/update_time not cleared: %v", got)
				}
			},
		},
		{
			name: "regex and condition are compiled",
			target: func() *hcv1.Target {
				tg := testHTTPTarget("web", "https://example.com/")
				tg.GetHttp().BodyRegex = `ok|up`
				tg.GetHttp().Condition = `status == 200`
				return tg
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := mustNormalize(t, tt.target)
			if cc == nil {
				t.Fatal("compiled check is nil")
			}
			if h := tt.target.GetHttp(); h != nil {
				if (h.GetBodyRegex() != "") != (cc.bodyRegex != nil) || (h.GetCondition() != "") != (cc.condition != nil) {
					t.Errorf("compiled check does not match the spec: regex %v, condition %v", cc.bodyRegex, cc.condition)
				}
			}
			if tt.check != nil {
				tt.check(t, tt.target)
			}
			// Normalizing a normalized target changes nothing.
			again := proto.CloneOf(tt.target)
			mustNormalize(t, again)
			if !proto.Equal(again, tt.target) {
				t.Errorf("normalize is not idempotent:\n first %v\nsecond %v", tt.target, again)
			}
		})
	}
}

func wantDurations(tb testing.TB, got *hcv1.Target, interval, timeout, delay time.Duration) {
	tb.Helper()
	if g := got.GetInterval().AsDuration(); g != interval {
		tb.Errorf("interval = %s, want %s", g, interval)
	}
	if g := got.GetTimeout().AsDuration(); g != timeout {
		tb.Errorf("timeout = %s, want %s", g, timeout)
	}
	if g := got.GetInitialDelay().AsDuration(); g != delay {
		tb.Errorf("initial_delay = %s, want %s", g, delay)
	}
}

func wantThresholds(tb testing.TB, got *hcv1.Target, failure, success uint32) {
	tb.Helper()
	if got.GetFailureThreshold() != failure || got.GetSuccessThreshold() != success {
		tb.Errorf("thresholds failure/success = %d/%d, want %d/%d", got.GetFailureThreshold(), got.GetSuccessThreshold(), failure, success)
	}
}

func TestNormalizeAccepts(t *testing.T) {
	tests := []struct {
		name   string
		target *hcv1.Target
	}{
		{"https with port and query", testHTTPTarget("web", "https://example.com:8443/health?full=1")},
		{"ipv6 literal", testHTTPTarget("web", "http://[::1]:8080/")},
		{"longest name", testHTTPTarget(strings.Repeat("a", 63), "http://example.com/")},
		{"digits and dashes", testHTTPTarget("0-web-1", "http://example.com/")},
		{"group", &hcv1.Target{Name: "web", Group: "shop", Check: &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "db.internal:5432"}}}},
		{"grpc", &hcv1.Target{Name: "api", Check: &hcv1.Target_Grpc{Grpc: &hcv1.GrpcCheck{Address: "127.0.0.1:7070", Service: "opsuite.v1"}}}},
		{"exec", &hcv1.Target{Name: "disk", Check: &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{Argv: []string{"/bin/true"}, Env: map[string]string{"A": "b=c"}}}}},
		{"ttl bounds", &hcv1.Target{Name: "job", Check: &hcv1.Target_Ttl{Ttl: &hcv1.TtlCheck{Ttl: pbDur(MaxInterval)}}}},
		{"interval bounds", func() *hcv1.Target {
			tg := testHTTPTarget("web", "http://example.com/")
			tg.Interval, tg.Timeout = pbDur(MinInterval), pbDur(MinInterval)
			return tg
		}()},
		{"thresholds at the maximum", func() *hcv1.Target {
			tg := testHTTPTarget("web", "http://example.com/")
			tg.FailureThreshold, tg.SuccessThreshold = MaxThreshold, MaxThreshold
			return tg
		}()},
		{"header with tab", func() *hcv1.Target {
			tg := testHTTPTarget("web", "http://example.com/")
			tg.GetHttp().Headers = map[string]string{"Authorization": "Bearer\tx", "X-Custom_1": "é"}
			return tg
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { mustNormalize(t, tt.target) })
	}
}

func TestNormalizeRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(tg *hcv1.Target) // applied to a valid HTTP target
		field  string
	}{
		{"empty name", func(tg *hcv1.Target) { tg.Name = "" }, "target.name"},
		{"upper-case name", func(tg *hcv1.Target) { tg.Name = "Web" }, "target.name"},
		{"name too long", func(tg *hcv1.Target) { tg.Name = strings.Repeat("a", 64) }, "target.name"},
		{"name starting with a dash", func(tg *hcv1.Target) { tg.Name = "-web" }, "target.name"},
		{"name ending with a dash", func(tg *hcv1.Target) { tg.Name = "web-" }, "target.name"},
		{"name with a dot", func(tg *hcv1.Target) { tg.Name = "web.shop" }, "target.name"},
		{"name with unicode", func(tg *hcv1.Target) { tg.Name = "wéb" }, "target.name"},
		{"bad group", func(tg *hcv1.Target) { tg.Group = "Shop_Front" }, "target.group"},
		{"too many labels", func(tg *hcv1.Target) {
			tg.Labels = map[string]string{}
			for i := range maxLabels + 1 {
				tg.Labels[strings.Repeat("k", i+1)] = "v"
			}
		}, "target.labels"},
		{"empty label key", func(tg *hcv1.Target) { tg.Labels = map[string]string{"": "v"} }, "target.labels"},
		{"long label value", func(tg *hcv1.Target) { tg.Labels = map[string]string{"k": strings.Repeat("v", maxLabelLen+1)} }, "target.labels"},

		{"negative interval", func(tg *hcv1.Target) { tg.Interval = pbDur(-time.Second) }, "target.interval"},
		{"interval below the minimum", func(tg *hcv1.Target) { tg.Interval = pbDur(time.Millisecond) }, "target.interval"},
		{"one nanosecond interval", func(tg *hcv1.Target) { tg.Interval = pbDur(time.Nanosecond) }, "target.interval"},
		{"huge interval", func(tg *hcv1.Target) { tg.Interval = pbDur(25 * time.Hour) }, "target.interval"},
		{"interval beyond time.Duration", func(tg *hcv1.Target) { tg.Interval = &durationpb.Duration{Seconds: 315_000_000_000} }, "target.interval"},
		{"interval with mismatched signs", func(tg *hcv1.Target) { tg.Interval = &durationpb.Duration{Seconds: 10, Nanos: -1} }, "target.interval"},
		{"interval with out-of-range nanos", func(tg *hcv1.Target) { tg.Interval = &durationpb.Duration{Seconds: 10, Nanos: 1_000_000_000} }, "target.interval"},
		{"timeout above the interval", func(tg *hcv1.Target) { tg.Interval, tg.Timeout = pbDur(time.Second), pbDur(2*time.Second) }, "target.timeout"},
		{"timeout above the default interval", func(tg *hcv1.Target) { tg.Timeout = pbDur(time.Minute) }, "target.timeout"},
		{"negative timeout", func(tg *hcv1.Target) { tg.Timeout = pbDur(-time.Second) }, "target.timeout"},
		{"absurd timeout", func(tg *hcv1.Target) { tg.Timeout = &durationpb.Duration{Seconds: 1 << 62} }, "target.timeout"},
		{"negative initial delay", func(tg *hcv1.Target) { tg.InitialDelay = pbDur(-time.Second) }, "target.initial_delay"},
		{"huge initial delay", func(tg *hcv1.Target) { tg.InitialDelay = pbDur(48 * time.Hour) }, "target.initial_delay"},
		{"failure threshold too high", func(tg *hcv1.Target) { tg.FailureThreshold = MaxThreshold + 1 }, "target.failure_threshold"},
		{"success threshold too high", func(tg *hcv1.Target) { tg.SuccessThreshold = 1 << 31 }, "target.success_threshold"},

		{"missing http check", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Http{} }, "target.http.url"},
		{"empty url", func(tg *hcv1.Target) { tg.GetHttp().Url = "" }, "target.http.url"},
		{"ftp url", func(tg *hcv1.Target) { tg.GetHttp().Url = "ftp://example.com/" }, "target.http.url"},
		{"file url", func(tg *hcv1.Target) { tg.GetHttp().Url = "file:///etc/passwd" }, "target.http.url"},
		{"url without scheme", func(tg *hcv1.Target) { tg.GetHttp().Url = "example.com/health" }, "target.http.url"},
		{"scheme-relative url", func(tg *hcv1.Target) { tg.GetHttp().Url = "//example.com/health" }, "target.http.url"},
		{"url without host", func(tg *hcv1.Target) { tg.GetHttp().Url = "http:///health" }, "target.http.url"},
		{"url with only a port", func(tg *hcv1.Target) { tg.GetHttp().Url = "http://:8080/" }, "target.http.url"},
		{"url with port 0", func(tg *hcv1.Target) { tg.GetHttp().Url = "http://example.com:0/" }, "target.http.url"},
		{"url with port 65536", func(tg *hcv1.Target) { tg.GetHttp().Url = "http://example.com:65536/" }, "target.http.url"},
		{"url with a named port", func(tg *hcv1.Target) { tg.GetHttp().Url = "http://example.com:http/" }, "target.http.url"},
		{"unparsable url", func(tg *hcv1.Target) { tg.GetHttp().Url = "http://[::1/" }, "target.http.url"},
		{"url with a space in the host", func(tg *hcv1.Target) { tg.GetHttp().Url = "http://exa mple.com/" }, "target.http.url"},
		{"url with a control character", func(tg *hcv1.Target) { tg.GetHttp().Url = "http://example.com/\n" }, "target.http.url"},
		{"method with a space", func(tg *hcv1.Target) { tg.GetHttp().Method = "GE T" }, "target.http.method"},
		{"method with a newline", func(tg *hcv1.Target) { tg.GetHttp().Method = "GET\n" }, "target.http.method"},
		{"header name with a space", func(tg *hcv1.Target) { tg.GetHttp().Headers = map[string]string{"X Bad": "v"} }, "target.http.headers"},
		{"header name with a colon", func(tg *hcv1.Target) { tg.GetHttp().Headers = map[string]string{"X-Bad:": "v"} }, "target.http.headers"},
		{"empty header name", func(tg *hcv1.Target) { tg.GetHttp().Headers = map[string]string{"": "v"} }, "target.http.headers"},
		{"header value with CRLF", func(tg *hcv1.Target) {
			tg.GetHttp().Headers = map[string]string{"X-Test": "a\r\nX-Injected: 1"}
		}, "target.http.headers"},
		{"header value with LF", func(tg *hcv1.Target) { tg.GetHttp().Headers = map[string]string{"X-Test": "a\nb"} }, "target.http.headers"},
		{"header value with CR", func(tg *hcv1.Target) { tg.GetHttp().Headers = map[string]string{"X-Test": "a\rb"} }, "target.http.headers"},
		{"header value with NUL", func(tg *hcv1.Target) { tg.GetHttp().Headers = map[string]string{"X-Test": "a\x00b"} }, "target.http.headers"},
		{"too many headers", func(tg *hcv1.Target) {
			tg.GetHttp().Headers = map[string]string{}
			for i := range maxHeaders + 1 {
				tg.GetHttp().Headers["X-H"+strings.Repeat("h", i)] = "v"
			}
		}, "target.http.headers"},
		{"body too large", func(tg *hcv1.Target) { tg.GetHttp().Body = strings.Repeat("b", maxBodyLen+1) }, "target.http.body"},
		{"expected status 42", func(tg *hcv1.Target) { tg.GetHttp().ExpectedStatuses = []uint32{42} }, "target.http.expected_statuses[0]"},
		{"second expected status 600", func(tg *hcv1.Target) { tg.GetHttp().ExpectedStatuses = []uint32{200, 600} }, "target.http.expected_statuses[1]"},
		{"body_contains too long", func(tg *hcv1.Target) { tg.GetHttp().BodyContains = strings.Repeat("x", maxPatternLen+1) }, "target.http.body_contains"},
		{"invalid regex", func(tg *hcv1.Target) { tg.GetHttp().BodyRegex = "(unclosed" }, "target.http.body_regex"},
		{"backreference regex", func(tg *hcv1.Target) { tg.GetHttp().BodyRegex = `(a)\1` }, "target.http.body_regex"},
		{"regex too long", func(tg *hcv1.Target) { tg.GetHttp().BodyRegex = strings.Repeat("a", maxPatternLen+1) }, "target.http.body_regex"},
		{"invalid CEL", func(tg *hcv1.Target) { tg.GetHttp().Condition = "status ==" }, "target.http.condition"},
		{"CEL with an unknown variable", func(tg *hcv1.Target) { tg.GetHttp().Condition = "latency < 5" }, "target.http.condition"},
		{"non-boolean CEL", func(tg *hcv1.Target) { tg.GetHttp().Condition = "1 + 2" }, "target.http.condition"},
		{"string CEL", func(tg *hcv1.Target) { tg.GetHttp().Condition = "body" }, "target.http.condition"},
		{"CEL with a type error", func(tg *hcv1.Target) { tg.GetHttp().Condition = `status == "200"` }, "target.http.condition"},
		{"condition too long", func(tg *hcv1.Target) {
			tg.GetHttp().Condition = strings.Repeat("true && ", maxPatternLen/8) + "true"
		}, "target.http.condition"},
		{"negative max latency", func(tg *hcv1.Target) { tg.GetHttp().MaxLatency = pbDur(-time.Second) }, "target.http.max_latency"},
		{"invalid max latency", func(tg *hcv1.Target) { tg.GetHttp().MaxLatency = &durationpb.Duration{Nanos: -2_000_000_000} }, "target.http.max_latency"},
		{"negative tls expiry warning", func(tg *hcv1.Target) { tg.GetHttp().TlsExpiryWarning = pbDur(-time.Hour) }, "target.http.tls_expiry_warning"},

		{"missing tcp check", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Tcp{} }, "target.tcp.address"},
		{"tcp address without port", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "db.internal"}} }, "target.tcp.address"},
		{"tcp address without host", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: ":5432"}} }, "target.tcp.address"},
		{"tcp port 0", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "db:0"}} }, "target.tcp.address"},
		{"tcp port too big", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "db:99999"}} }, "target.tcp.address"},
		{"tcp named port", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "db:postgres"}} }, "target.tcp.address"},
		{"missing grpc check", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Grpc{} }, "target.grpc.address"},
		{"grpc address without port", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Grpc{Grpc: &hcv1.GrpcCheck{Address: "api"}} }, "target.grpc.address"},
		{"missing exec check", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Exec{} }, "target.exec.argv"},
		{"empty exec argv", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{}} }, "target.exec.argv"},
		{"empty exec program", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{Argv: []string{""}}} }, "target.exec.argv"},
		{"exec argument with NUL", func(tg *hcv1.Target) {
			tg.Check = &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{Argv: []string{"check", "a\x00b"}}}
		}, "target.exec.argv[1]"},
		{"too many exec arguments", func(tg *hcv1.Target) {
			tg.Check = &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{Argv: make([]string, maxArgv+1)}}
			tg.GetExec().Argv[0] = "check"
		}, "target.exec.argv"},
		{"exec env name with =", func(tg *hcv1.Target) {
			tg.Check = &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{Argv: []string{"check"}, Env: map[string]string{"A=B": "c"}}}
		}, "target.exec.env"},
		{"empty exec env name", func(tg *hcv1.Target) {
			tg.Check = &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{Argv: []string{"check"}, Env: map[string]string{"": "c"}}}
		}, "target.exec.env"},
		{"exec env value with NUL", func(tg *hcv1.Target) {
			tg.Check = &hcv1.Target_Exec{Exec: &hcv1.ExecCheck{Argv: []string{"check"}, Env: map[string]string{"A": "\x00"}}}
		}, "target.exec.env"},
		{"missing ttl", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Ttl{Ttl: &hcv1.TtlCheck{}} }, "target.ttl.ttl"},
		{"ttl too short", func(tg *hcv1.Target) {
			tg.Check = &hcv1.Target_Ttl{Ttl: &hcv1.TtlCheck{Ttl: pbDur(50 * time.Millisecond)}}
		}, "target.ttl.ttl"},
		{"ttl too long", func(tg *hcv1.Target) {
			tg.Check = &hcv1.Target_Ttl{Ttl: &hcv1.TtlCheck{Ttl: pbDur(MaxInterval + time.Second)}}
		}, "target.ttl.ttl"},
		{"negative ttl", func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Ttl{Ttl: &hcv1.TtlCheck{Ttl: pbDur(-time.Minute)}} }, "target.ttl.ttl"},
		{"missing check", func(tg *hcv1.Target) { tg.Check = nil }, "target.check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := testHTTPTarget("web", "http://example.com/health")
			tt.mutate(tg)
			cc, err := normalize(tg)
			assertField(t, err, tt.field)
			if cc != nil {
				t.Errorf("compiled check returned with an error: %v", cc)
			}
			if !strings.Contains(err.Error(), tt.field+": ") {
				t.Errorf("message %q does not name %s", err, tt.field)
			}
		})
	}
}

func TestNormalizeNil(t *testing.T) {
	_, err := normalize(nil)
	assertField(t, err, "target")
}

func TestNormalizeReportsEveryField(t *testing.T) {
	tg := &hcv1.Target{
		Name:     "Bad Name",
		Interval: pbDur(-time.Second),
		Check:    &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: "ftp://x", ExpectedStatuses: []uint32{42}}},
	}
	_, err := normalize(tg)
	fields := fieldErrors(t, err)
	for _, want := range []string{"target.name", "target.interval", "target.http.url", "target.http.expected_statuses[0]"} {
		assertField(t, err, want)
	}
	if len(fields) < 4 {
		t.Errorf("fields %q, want at least 4", fields)
	}
}

// TestNormalizeRejectsUnsendableHeaderValues checks header values net/http
// refuses to send: a target with one could never pass.
func TestNormalizeRejectsUnsendableHeaderValues(t *testing.T) {
	for _, v := range []string{"a\x01b", "a\x1bb", "a\x7fb"} {
		t.Run(strings.ToValidUTF8(v, "?"), func(t *testing.T) {
			tg := testHTTPTarget("web", "http://example.com/")
			tg.GetHttp().Headers = map[string]string{"X-Test": v}
			_, err := normalize(tg)
			assertField(t, err, "target.http.headers")
		})
	}
}

func TestToStatus(t *testing.T) {
	_, verr := normalize(testHTTPTarget("Bad", "ftp://x"))
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"validation", verr, codes.InvalidArgument},
		{"not found", ErrNotFound, codes.NotFound},
		{"wrapped not found", errors.Join(errors.New("get web"), ErrNotFound), codes.NotFound},
		{"already exists", ErrAlreadyExists, codes.AlreadyExists},
		{"conflict", ErrConflict, codes.Aborted},
		{"not ready", ErrNotReady, codes.Unavailable},
		{"not ttl", ErrNotTTL, codes.FailedPrecondition},
		{"status passes through", status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied},
		{"anything else", errors.New("disk on fire"), codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := status.Convert(toStatus(tt.err))
			if st.Code() != tt.want {
				t.Errorf("code %s, want %s", st.Code(), tt.want)
			}
		})
	}
	t.Run("field violations", func(t *testing.T) {
		st := status.Convert(toStatus(verr))
		var fields []string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					fields = append(fields, v.GetField())
				}
			}
		}
		if want := fieldErrors(t, verr); strings.Join(fields, ",") != strings.Join(want, ",") {
			t.Errorf("field violations %q, want %q", fields, want)
		}
	})
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
}

func TestApplyMask(t *testing.T) {
	base := func() *hcv1.Target {
		return &hcv1.Target{
			Name:     "web",
			Group:    "shop",
			Labels:   map[string]string{"team": "a", "tier": "1"},
			Interval: pbDur(time.Minute),
			Timeout:  pbDur(time.Second),
			Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{
				Url:    "http://old.example/",
				Method: "HEAD",
				Headers: map[string]string{
					"X-Old": "1",
				},
			}},
		}
	}
	tests := []struct {
		name    string
		src     *hcv1.Target
		paths   []string
		want    func(tg *hcv1.Target) // the expected change to base()
		wantErr string
	}{
		{
			name:  "top-level scalar",
			src:   &hcv1.Target{Group: "billing"},
			paths: []string{"group"},
			want:  func(tg *hcv1.Target) { tg.Group = "billing" },
		},
		{
			name:  "top-level message",
			src:   &hcv1.Target{Interval: pbDur(5 * time.Second)},
			paths: []string{"interval"},
			want:  func(tg *hcv1.Target) { tg.Interval = pbDur(5 * time.Second) },
		},
		{
			name:  "several paths",
			src:   &hcv1.Target{Group: "billing", NonCritical: true, FailureThreshold: 7},
			paths: []string{"group", "non_critical", "failure_threshold"},
			want: func(tg *hcv1.Target) {
				tg.Group, tg.NonCritical, tg.FailureThreshold = "billing", true, 7
			},
		},
		{
			name:  "a map is replaced whole",
			src:   &hcv1.Target{Labels: map[string]string{"team": "b"}},
			paths: []string{"labels"},
			want:  func(tg *hcv1.Target) { tg.Labels = map[string]string{"team": "b"} },
		},
		{
			name:  "a field the source lacks is cleared",
			src:   &hcv1.Target{},
			paths: []string{"interval", "group", "labels"},
			want:  func(tg *hcv1.Target) { tg.Interval, tg.Group, tg.Labels = nil, "", nil },
		},
		{
			name:  "nested path changes only that field",
			src:   &hcv1.Target{Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: "http://new.example/", Method: "POST"}}},
			paths: []string{"http.url"},
			want:  func(tg *hcv1.Target) { tg.GetHttp().Url = "http://new.example/" },
		},
		{
			name:  "nested map",
			src:   &hcv1.Target{Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{Headers: map[string]string{"X-New": "2"}}}},
			paths: []string{"http.headers"},
			want:  func(tg *hcv1.Target) { tg.GetHttp().Headers = map[string]string{"X-New": "2"} },
		},
		{
			name:  "nested path the source lacks is cleared",
			src:   &hcv1.Target{},
			paths: []string{"http.method"},
			want:  func(tg *hcv1.Target) { tg.GetHttp().Method = "" },
		},
		{
			name:  "whole message replaced",
			src:   &hcv1.Target{Check: &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: "http://new.example/"}}},
			paths: []string{"http"},
			want:  func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Http{Http: &hcv1.HttpCheck{Url: "http://new.example/"}} },
		},
		{
			name:  "oneof switch to another member",
			src:   &hcv1.Target{Check: &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "db:5432"}}},
			paths: []string{"tcp"},
			want:  func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "db:5432"}} },
		},
		{
			name:  "oneof switch through a nested path",
			src:   &hcv1.Target{Check: &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "db:5432"}}},
			paths: []string{"tcp.address"},
			want:  func(tg *hcv1.Target) { tg.Check = &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "db:5432"}} },
		},
		{
			name:  "clearing the set oneof member",
			src:   &hcv1.Target{Check: &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "db:5432"}}},
			paths: []string{"http"},
			want:  func(tg *hcv1.Target) { tg.Check = nil },
		},
		{
			name:  "clearing an unset oneof member keeps the set one",
			src:   &hcv1.Target{},
			paths: []string{"grpc"},
			want:  func(*hcv1.Target) {},
		},
		{name: "unknown field", src: &hcv1.Target{}, paths: []string{"colour"}, wantErr: `no field "colour"`},
		{name: "unknown nested field", src: &hcv1.Target{}, paths: []string{"http.colour"}, wantErr: `no field "colour"`},
		{name: "empty path", src: &hcv1.Target{}, paths: []string{""}, wantErr: `no field ""`},
		{name: "json name is not a path", src: &hcv1.Target{}, paths: []string{"failureThreshold"}, wantErr: "no field"},
		{name: "sub-field of a scalar", src: &hcv1.Target{}, paths: []string{"name.first"}, wantErr: `"name" has no sub-fields`},
		{name: "sub-field of a map", src: &hcv1.Target{}, paths: []string{"labels.team"}, wantErr: `"labels" has no sub-fields`},
		{name: "sub-field of a list", src: &hcv1.Target{}, paths: []string{"http.expected_statuses.x"}, wantErr: "has no sub-fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := base()
			srcBefore := proto.CloneOf(tt.src)
			err := applyMask(dst.ProtoReflect(), tt.src.ProtoReflect(), tt.paths)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("applyMask(%q) succeeded, want an error containing %q", tt.paths, tt.wantErr)
				}
				assertContains(t, "error", err.Error(), "update_mask")
				assertContains(t, "error", err.Error(), tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("applyMask(%q): %v", tt.paths, err)
			}
			want := base()
			tt.want(want)
			if !proto.Equal(dst, want) {
				t.Errorf("after applyMask(%q):\n got %v\nwant %v", tt.paths, dst, want)
			}
			if !proto.Equal(tt.src, srcBefore) {
				t.Errorf("applyMask changed its source: %v", tt.src)
			}
		})
	}
}

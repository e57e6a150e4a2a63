package healthchecker

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cel.dev/cel-go/cel"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxBodyRead is how much of a response body a check reads to judge it.
const maxBodyRead = 1 << 20

// compiledCheck holds what validation prepared for running a check.
type compiledCheck struct {
	bodyRegex *regexp.Regexp
	condition cel.Program
}

// prober runs checks. It shares HTTP transports across targets so
// connections to the same host are reused between checks.
type prober struct {
	transport         *http.Transport
	insecureTransport *http.Transport
	// clients are built once, indexed [tls_skip_verify][follow_redirects].
	clients [2][2]*http.Client
	// replica names the checking replica in ReplicaHeader.
	replica string
}

// ReplicaHeader names the replica sending an HTTP check, unless the target
// sets it itself.
const ReplicaHeader = "Opsuite-Replica"

func newProber(replica string) *prober {
	mk := func(skipVerify bool) *http.Transport {
		return &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          0,
			MaxIdleConnsPerHost:   1024,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true,
			TLSClientConfig:       &tls.Config{InsecureSkipVerify: skipVerify}, //nolint:gosec // the target asked for it
		}
	}
	p := &prober{transport: mk(false), insecureTransport: mk(true), replica: replica}
	noFollow := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for i, tr := range []*http.Transport{p.transport, p.insecureTransport} {
		p.clients[i][0] = &http.Client{Transport: tr, CheckRedirect: noFollow}
		p.clients[i][1] = &http.Client{Transport: tr}
	}
	return p
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (p *prober) close() {
	p.transport.CloseIdleConnections()
	p.insecureTransport.CloseIdleConnections()
}

func result(outcome hcv1.CheckOutcome, start time.Time, msg string, details map[string]string) *hcv1.CheckResult {
	return &hcv1.CheckResult{
		Outcome:      outcome,
		Time:         timestamppb.New(start),
		ResponseTime: durationpb.New(time.Since(start)),
		Message:      msg,
		Details:      details,
	}
}

func (p *prober) probeHTTP(ctx context.Context, h *hcv1.HttpCheck, cc *compiledCheck) *hcv1.CheckResult {
	start := time.Now()
	var body io.Reader
	if h.GetBody() != "" {
		body = strings.NewReader(h.GetBody())
	}
	req, err := http.NewRequestWithContext(ctx, h.GetMethod(), h.GetUrl(), body)
	if err != nil {
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, "build request: "+err.Error(), nil)
	}
	for k, v := range h.GetHeaders() {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "opsuite-healthchecker")
	}
	if p.replica != "" && req.Header.Get(ReplicaHeader) == "" {
		req.Header.Set(ReplicaHeader, p.replica)
	}
	resp, err := p.clients[b2i(h.GetTlsSkipVerify())][b2i(h.GetFollowRedirects())].Do(req)
	if err != nil {
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, describeNetErr(ctx, err), nil)
	}
	defer resp.Body.Close()
	needBody := h.GetBodyContains() != "" || cc.bodyRegex != nil || cc.condition != nil
	var data []byte
	if needBody {
		data, err = io.ReadAll(io.LimitReader(resp.Body, maxBodyRead))
		if err != nil {
			return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, "read body: "+describeNetErr(ctx, err), nil)
		}
	}
	elapsed := time.Since(start)
	statusOK := statusExpected(resp.StatusCode, h.GetExpectedStatuses())
	if !statusOK && !needBody {
		// The start of the body usually says why ("db down"): keep it.
		data, _ = io.ReadAll(io.LimitReader(resp.Body, bodyExcerpt))
	}
	// Drain a short body of known length so the connection can be reused;
	// anything else is closed unread rather than waited for.
	if !needBody && resp.ContentLength >= 0 && resp.ContentLength <= 4<<10 {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	code := strconv.Itoa(resp.StatusCode)
	details := map[string]string{"status_code": code}

	if !statusOK {
		msg := fmt.Sprintf("status %d, expected %s", resp.StatusCode, describeExpected(h.GetExpectedStatuses()))
		if ex := excerpt(data); ex != "" {
			msg += ": " + ex
		}
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, msg, details)
	}
	if s := h.GetBodyContains(); s != "" && !bytes.Contains(data, []byte(s)) {
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, fmt.Sprintf("body does not contain %q", s), details)
	}
	if cc.bodyRegex != nil && !cc.bodyRegex.Match(data) {
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, fmt.Sprintf("body does not match /%s/", cc.bodyRegex), details)
	}
	if cc.condition != nil {
		hdrs := make(map[string]string, len(resp.Header))
		for k, v := range resp.Header {
			hdrs[strings.ToLower(k)] = strings.Join(v, ",")
		}
		ok, err := evalCondition(cc.condition, resp.StatusCode, hdrs, data)
		if err != nil {
			return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, err.Error(), details)
		}
		if !ok {
			return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, fmt.Sprintf("condition %q is false", h.GetCondition()), details)
		}
	}
	var warnings []string
	if ml := h.GetMaxLatency().AsDuration(); ml > 0 && elapsed > ml {
		warnings = append(warnings, fmt.Sprintf("response took %s, over max latency %s", elapsed.Round(time.Millisecond), ml))
	}
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		exp := resp.TLS.PeerCertificates[0].NotAfter
		details["cert_expiry"] = exp.UTC().Format(time.RFC3339)
		window := h.GetTlsExpiryWarning().AsDuration()
		if window <= 0 {
			window = DefaultTLSExpiryWarning
		}
		if left := time.Until(exp); left < window {
			warnings = append(warnings, fmt.Sprintf("certificate expires in %s (at %s)", left.Round(time.Minute), exp.UTC().Format(time.RFC3339)))
		}
	}
	res := &hcv1.CheckResult{
		Outcome:      hcv1.CheckOutcome_CHECK_OUTCOME_PASS,
		Time:         timestamppb.New(start),
		ResponseTime: durationpb.New(elapsed),
		Message:      "status " + code,
		Details:      details,
	}
	if len(warnings) > 0 {
		res.Outcome = hcv1.CheckOutcome_CHECK_OUTCOME_WARN
		res.Message = strings.Join(warnings, "; ")
	}
	return res
}

func statusExpected(code int, expected []uint32) bool {
	if len(expected) == 0 {
		return code >= 200 && code < 400
	}
	return slices.Contains(expected, uint32(code))
}

func describeExpected(expected []uint32) string {
	if len(expected) == 0 {
		return "200-399"
	}
	parts := make([]string, len(expected))
	for i, e := range expected {
		parts[i] = strconv.Itoa(int(e))
	}
	return strings.Join(parts, ", ")
}

// describeNetErr turns transport errors into a sentence, naming timeouts plainly.
func describeNetErr(ctx context.Context, err error) string {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "timed out: " + err.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out: " + err.Error()
	}
	return err.Error()
}

func probeTCP(ctx context.Context, t *hcv1.TcpCheck) *hcv1.CheckResult {
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.GetAddress())
	if err != nil {
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, describeNetErr(ctx, err), nil)
	}
	_ = conn.Close()
	return result(hcv1.CheckOutcome_CHECK_OUTCOME_PASS, start, "connected to "+t.GetAddress(), nil)
}

// newGRPCConn prepares a lazily connecting client for a gRPC check.
func newGRPCConn(g *hcv1.GrpcCheck) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if g.GetTls() {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: g.GetTlsSkipVerify()}) //nolint:gosec // the target asked for it
	}
	conn, err := grpc.NewClient("passthrough:///"+g.GetAddress(), grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", g.GetAddress(), err)
	}
	return conn, nil
}

func probeGRPC(ctx context.Context, conn *grpc.ClientConn, g *hcv1.GrpcCheck) *hcv1.CheckResult {
	start := time.Now()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: g.GetService()})
	if err != nil {
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, "health check RPC: "+err.Error(), nil)
	}
	details := map[string]string{"serving_status": resp.GetStatus().String()}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, "serving status "+resp.GetStatus().String(), details)
	}
	return result(hcv1.CheckOutcome_CHECK_OUTCOME_PASS, start, "SERVING", details)
}

// maxExecOutput is how much of an exec check's output is kept in its result.
const maxExecOutput = 4 << 10

// tailBuffer keeps the last n bytes written to it.
type tailBuffer struct {
	n   int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.n; over > 0 {
		b.buf = b.buf[over:]
	}
	return len(p), nil
}

func probeExec(ctx context.Context, e *hcv1.ExecCheck) *hcv1.CheckResult {
	start := time.Now()
	argv := e.GetArgv()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = e.GetWorkingDir()
	cmd.Env = os.Environ()
	for k, v := range e.GetEnv() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &tailBuffer{n: maxExecOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// A process group of its own, so a timeout kills what the check started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 250 * time.Millisecond
	err := cmd.Run()
	if cmd.Process != nil {
		// Whatever the check left running in its group goes too.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // it exited 0; a leftover child held the output open
	}
	output := strings.TrimSpace(string(out.buf))
	details := map[string]string{}
	if output != "" {
		details["output"] = output
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		details["exit_code"] = "0"
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_PASS, start, firstLine(output, "exit 0"), details)
	case ctx.Err() != nil:
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, "timed out; process group killed", details)
	case errors.As(err, &exitErr):
		code := exitErr.ExitCode()
		details["exit_code"] = strconv.Itoa(code)
		if code == 1 {
			return result(hcv1.CheckOutcome_CHECK_OUTCOME_WARN, start, firstLine(output, "exit 1"), details)
		}
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, fmt.Sprintf("exit %d: %s", code, firstLine(output, exitErr.String())), details)
	default:
		return result(hcv1.CheckOutcome_CHECK_OUTCOME_FAIL, start, "start: "+err.Error(), details)
	}
}

func firstLine(s, def string) string {
	if s == "" {
		return def
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// bodyExcerpt is how much of a failing response's body a result quotes.
const bodyExcerpt = 200

// excerpt is the start of a body as one printable line, "" when empty.
func excerpt(body []byte) string {
	if len(body) > bodyExcerpt {
		body = body[:bodyExcerpt]
	}
	s := strings.ToValidUTF8(string(body), "")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

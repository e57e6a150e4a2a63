package integration_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	eventsv1 "github.com/opsuite/opsuite/gen/opsuite/events/v1"
	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// restAs calls the REST API with a given secret ("" sends none).
func restAs(t *testing.T, secret, method, url, body string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRolesOnEveryRPCGroup: for each group of RPCs (read, operate,
// administer) and each caller (no token, viewer, operator, admin, revoked),
// the call is refused with 401/403 or let through, over gRPC and REST alike;
// changes are audited on NATS with who made them.
func TestRolesOnEveryRPCGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts the opsuite binary")
	}
	httpAddr, grpcAddr, natsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	p := startOpsuite(t, httpAddr, "up", "--data-dir", t.TempDir(), "--grpc-addr", grpcAddr, "--nats-listen", natsAddr, "--docker", "off")
	t.Cleanup(p.stop)
	api := "http://" + httpAddr

	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	audit, err := nc.SubscribeSync("opsuite.audit.>")
	if err != nil {
		t.Fatal(err)
	}

	secrets := map[string]string{"none": "", "admin": adminToken, "bogus": "ops_not-a-real-token-at-all"}
	for _, role := range []string{"viewer", "operator"} {
		var resp struct {
			Secret string `json:"secret"`
		}
		body := fmt.Sprintf(`{"name": %q, "role": "ROLE_%s"}`, "t-"+role, strings.ToUpper(role))
		if code := restJSON(t, "POST", api+"/v1/tokens", body, &resp); code != http.StatusOK || !strings.HasPrefix(resp.Secret, "ops_") {
			t.Fatalf("create %s token: HTTP %d, secret %q", role, code, resp.Secret)
		}
		secrets[role] = resp.Secret
	}
	// A revoked token is refused at once.
	var rev struct {
		Secret string `json:"secret"`
	}
	restJSON(t, "POST", api+"/v1/tokens", `{"name": "t-revoked", "role": "ROLE_ADMIN"}`, &rev)
	if code := restJSON(t, "POST", api+"/v1/tokens/t-revoked:revoke", "", nil); code != http.StatusOK {
		t.Fatalf("revoke: HTTP %d", code)
	}
	secrets["revoked"] = rev.Secret

	type call struct {
		group      string
		need       string // least role
		restMethod string
		restURL    string
		restBody   string
		grpc       func(ctx context.Context, conn *grpc.ClientConn) error
	}
	calls := []call{
		{"read", "viewer", "GET", "/v1/applications", "", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := deployerv1.NewDeployerServiceClient(c).ListApplications(ctx, &deployerv1.ListApplicationsRequest{})
			return err
		}},
		{"read", "viewer", "GET", "/v1/targets", "", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := hcv1.NewHealthCheckerServiceClient(c).ListTargets(ctx, &hcv1.ListTargetsRequest{})
			return err
		}},
		{"operate", "operator", "POST", "/v1/applications/nope:deploy", `{}`, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := deployerv1.NewDeployerServiceClient(c).Deploy(ctx, &deployerv1.DeployRequest{Name: "nope"})
			return err
		}},
		{"administer", "admin", "POST", "/v1/targets", `{"name": "x", "tcp": {"address": "127.0.0.1:9"}}`, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := hcv1.NewHealthCheckerServiceClient(c).CreateTarget(ctx, &hcv1.CreateTargetRequest{Target: &hcv1.Target{Name: "y", Check: &hcv1.Target_Tcp{Tcp: &hcv1.TcpCheck{Address: "127.0.0.1:9"}}}})
			return err
		}},
		{"administer", "admin", "GET", "/v1/tokens", "", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := gatewayv1.NewAccessServiceClient(c).ListTokens(ctx, &gatewayv1.ListTokensRequest{})
			return err
		}},
	}
	rank := map[string]int{"viewer": 1, "operator": 2, "admin": 3}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, c := range calls {
		for _, who := range []string{"none", "bogus", "revoked", "viewer", "operator", "admin"} {
			t.Run(fmt.Sprintf("%s %s %s as %s", c.group, c.restMethod, c.restURL, who), func(t *testing.T) {
				wantHTTP, wantCode := 0, codes.OK
				switch {
				case who == "none" || who == "bogus" || who == "revoked":
					wantHTTP, wantCode = http.StatusUnauthorized, codes.Unauthenticated
				case rank[who] < rank[c.need]:
					wantHTTP, wantCode = http.StatusForbidden, codes.PermissionDenied
				}
				got := restAs(t, secrets[who], c.restMethod, api+c.restURL, c.restBody)
				if wantHTTP != 0 && got != wantHTTP {
					t.Errorf("REST: HTTP %d, want %d", got, wantHTTP)
				}
				if wantHTTP == 0 && (got == http.StatusUnauthorized || got == http.StatusForbidden) {
					t.Errorf("REST: HTTP %d, want the call let through", got)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if s := secrets[who]; s != "" {
					ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s)
				}
				code := status.Code(c.grpc(ctx, conn))
				if wantCode != codes.OK && code != wantCode {
					t.Errorf("gRPC: %v, want %v", code, wantCode)
				}
				if wantCode == codes.OK && (code == codes.Unauthenticated || code == codes.PermissionDenied) {
					t.Errorf("gRPC: %v, want the call let through", code)
				}
			})
		}
	}

	// Who made a change is on record.
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg, err := audit.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatal("no audit event of the operator's deploy")
		}
		var ev eventsv1.AuditRecorded
		if err := proto.Unmarshal(msg.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetActor() == "t-operator" && strings.HasSuffix(ev.GetMethod(), "/Deploy") {
			if ev.GetResource() != "name/nope" || ev.GetCode() != "NotFound" {
				t.Fatalf("audit %v", &ev)
			}
			break
		}
	}
	// Health probes need no token.
	if code := restAs(t, "", "GET", api+"/readyz", ""); code != http.StatusOK {
		t.Fatalf("/readyz without a token: HTTP %d", code)
	}
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	deployerv1 "github.com/opsuite/opsuite/gen/opsuite/deployer/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func statusJSON(t *testing.T, st *status.Status) string {
	t.Helper()
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(st.Proto())
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// server answers each path with a fixed status and body, and records the
// authorization header it saw.
func server(t *testing.T, routes map[string]func(w http.ResponseWriter, r *http.Request)) *client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := routes[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return &client{settings: Settings{Server: srv.URL, ServerFrom: "flag", Token: "secret", TokenFrom: "$OPSUITE_TOKEN", ConfigPath: "/home/u/.config/opsuite/config.yaml"}, http: srv.Client()}
}

func TestClientErrors(t *testing.T) {
	ve := validation.New("application")
	ve.Add("name", "must be a DNS-1123 label")
	ve.Add("spec.replicas", "must be at least 0")
	invalid := statusJSON(t, ve.GRPCStatus())
	cl := server(t, map[string]func(http.ResponseWriter, *http.Request){
		"/invalid": func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(400); _, _ = io.WriteString(w, invalid) },
		"/denied": func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(403)
			_, _ = io.WriteString(w, statusJSON(t, status.New(codes.PermissionDenied, "token ci has role viewer; /x/Deploy needs operator")))
		},
		"/unauth": func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer secret" {
				t.Errorf("authorization header %q", r.Header.Get("Authorization"))
			}
			w.WriteHeader(401)
			_, _ = io.WriteString(w, statusJSON(t, status.New(codes.Unauthenticated, "unknown token")))
		},
		"/notjson": func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(502)
			_, _ = io.WriteString(w, "<html>bad gateway</html>")
		},
	})
	for _, tc := range []struct {
		path string
		code codes.Code
		want []string
	}{
		{"/invalid", codes.InvalidArgument, []string{"invalid application", "field violations:", "  - name: must be a DNS-1123 label", "  - spec.replicas: must be at least 0"}},
		{"/denied", codes.PermissionDenied, []string{"needs operator", "hint: the token's role may not do this", "opsuite token create"}},
		{"/unauth", codes.Unauthenticated, []string{"unknown token", "the token from $OPSUITE_TOKEN was refused", "/home/u/.config/opsuite/config.yaml"}},
		{"/notjson", codes.Unknown, []string{"GET /notjson: HTTP 502 <html>bad gateway</html>"}},
		{"/missing", codes.NotFound, []string{"HTTP 404"}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			err := cl.do(context.Background(), http.MethodGet, tc.path, nil, nil, &deployerv1.GetApplicationResponse{})
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v is not an APIError", err)
			}
			if ae.Code != tc.code {
				t.Errorf("code %v, want %v", ae.Code, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%s", w, err)
				}
			}
		})
	}
}

func TestNoTokenHint(t *testing.T) {
	e := &APIError{Code: codes.Unauthenticated, Message: "no token"}
	hint := hintFor(e, Settings{ConfigPath: "/c.yaml"})
	for _, w := range []string{"--token", "$OPSUITE_TOKEN", "`token:` in /c.yaml", "$OPSUITE_ADMIN_TOKEN", "opsuite token create"} {
		if !strings.Contains(hint, w) {
			t.Errorf("hint lacks %q: %s", w, hint)
		}
	}
}

func TestClientStream(t *testing.T) {
	r1, _ := protojson.Marshal(&deployerv1.WatchRolloutResponse{Rollout: &deployerv1.Rollout{Id: "r1", Phase: deployerv1.RolloutPhase_ROLLOUT_PHASE_PROGRESSING}})
	r2, _ := protojson.Marshal(&deployerv1.WatchRolloutResponse{Rollout: &deployerv1.Rollout{Id: "r1", Phase: deployerv1.RolloutPhase_ROLLOUT_PHASE_SUCCEEDED}})
	cl := server(t, map[string]func(http.ResponseWriter, *http.Request){
		"/ok": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			fmt.Fprintf(w, "{\"result\":%s}\n\n{\"result\":%s}\n", r1, r2)
		},
		"/err": func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "{\"result\":%s}\n{\"error\":%s}\n", r1, statusJSON(t, status.New(codes.NotFound, "rollout r9 not found")))
		},
		"/garbage": func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "not json\n") },
	})
	newMsg := func() proto.Message { return &deployerv1.WatchRolloutResponse{} }
	var phases []string
	err := cl.stream(context.Background(), "/ok", nil, newMsg, func(m proto.Message) error {
		phases = append(phases, EnumName(m.(*deployerv1.WatchRolloutResponse).GetRollout().GetPhase()))
		return nil
	})
	if !errors.Is(err, io.EOF) || strings.Join(phases, ",") != "progressing,succeeded" {
		t.Fatalf("stream: %v, phases %v", err, phases)
	}
	n := 0
	err = cl.stream(context.Background(), "/err", nil, newMsg, func(proto.Message) error { n++; return nil })
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != codes.NotFound || n != 1 {
		t.Fatalf("stream with an error line: %v after %d messages", err, n)
	}
	err = cl.stream(context.Background(), "/garbage", nil, newMsg, func(proto.Message) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "undecodable stream line") {
		t.Fatalf("garbage stream: %v", err)
	}
	// fn's error ends the stream and comes back as it is.
	err = cl.stream(context.Background(), "/ok", nil, newMsg, func(proto.Message) error { return errStreamDone })
	if !errors.Is(err, errStreamDone) {
		t.Fatalf("stopped stream: %v", err)
	}
}

func TestConnectionRefusedHint(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	cl := &client{settings: Settings{Server: addr, ServerFrom: "default", ConfigPath: "/c.yaml"}, http: &http.Client{}}
	err := cl.do(context.Background(), http.MethodGet, "/v1/health", nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "is `opsuite up` running at "+addr+"?") || !strings.Contains(err.Error(), "--server") {
		t.Fatalf("error %v", err)
	}
}

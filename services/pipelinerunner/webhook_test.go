package pipelinerunner_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func TestWebhooks(t *testing.T) {
	inst := newEnv(t).start(t, pipelinerunner.Deps{})
	c := inst.client
	for name, val := range map[string]string{"gh-hook": "gh-secret-value", "gl-hook": "gl-token-value"} {
		if _, err := c.CreateSecret(t.Context(), &pb.CreateSecretRequest{Secret: &pb.Secret{Name: name, Value: val}}); err != nil {
			t.Fatal(err)
		}
	}
	createPipeline(t, c, "hooked", `
triggers:
  webhook:
    - {provider: github, secret: gh-hook, repository: acme/shop, branches: [main]}
    - {provider: gitlab, secret: gl-hook, events: [push, tag_push]}
steps:
  - {name: a, script: 'echo "$OPSUITE_EVENT $OPSUITE_BRANCH $OPSUITE_COMMIT"'}
`)
	push := []byte(`{"ref":"refs/heads/main","after":"abc123","repository":{"full_name":"acme/shop"},"sender":{"login":"dev"}}`)
	gh := func(body []byte, sig, delivery, event string) (*pb.ReceiveWebhookResponse, error) {
		return c.ReceiveWebhook(t.Context(), &pb.ReceiveWebhookRequest{
			Pipeline: "hooked", Provider: pb.WebhookProvider_WEBHOOK_PROVIDER_GITHUB, Body: body,
			Headers: map[string]string{"X-Hub-Signature-256": sig, "X-GitHub-Delivery": delivery, "X-GitHub-Event": event},
		})
	}
	res, err := gh(push, sign("gh-secret-value", push), "d-1", "push")
	if err != nil || len(res.GetRuns()) != 1 {
		t.Fatalf("signed push: %v %v", res, err)
	}
	run := res.GetRuns()[0]
	if tr := run.GetTrigger(); tr.GetKind() != pb.TriggerKind_TRIGGER_KIND_WEBHOOK || tr.GetBranch() != "main" || tr.GetCommit() != "abc123" || tr.GetDeliveryId() != "d-1" || tr.GetActor() != "dev" {
		t.Fatalf("trigger %v", tr)
	}
	if got := waitRun(t, c, run.GetId()); got.GetState() != pb.RunState_RUN_STATE_SUCCESS {
		t.Fatalf("run %v", got)
	}
	// Replay of the same delivery starts nothing and answers the first run.
	again, err := gh(push, sign("gh-secret-value", push), "d-1", "push")
	if err != nil || !again.GetDuplicate() || len(again.GetRuns()) != 1 || again.GetRuns()[0].GetId() != run.GetId() {
		t.Fatalf("replay: %v %v", again, err)
	}
	// Bad signatures.
	for _, sig := range []string{"", "sha256=00", sign("wrong", push), "sha1=" + sign("gh-secret-value", push)[7:]} {
		if _, err := gh(push, sig, "d-2", "push"); status.Code(err) != codes.Unauthenticated {
			t.Errorf("signature %q: %v", sig, err)
		}
	}
	tampered := []byte(`{"ref":"refs/heads/main","after":"evil","repository":{"full_name":"acme/shop"}}`)
	if _, err := gh(tampered, sign("gh-secret-value", push), "d-3", "push"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("tampered body: %v", err)
	}
	// Filters.
	other := []byte(`{"ref":"refs/heads/feature","repository":{"full_name":"acme/shop"}}`)
	res, err = gh(other, sign("gh-secret-value", other), "d-4", "push")
	if err != nil || len(res.GetRuns()) != 0 || res.GetMessage() == "" {
		t.Errorf("feature branch: %v %v", res, err)
	}
	ping := []byte(`{"zen":"hi"}`)
	res, err = gh(ping, sign("gh-secret-value", ping), "d-5", "ping")
	if err != nil || len(res.GetRuns()) != 0 || res.GetMessage() != "event ping ignored" {
		t.Errorf("ping: %v %v", res, err)
	}
	// GitLab token.
	glBody := []byte(`{"ref":"refs/tags/v1.0.0","checkout_sha":"def456","project":{"path_with_namespace":"acme/shop"},"user_username":"ops"}`)
	gl := func(token, delivery string) (*pb.ReceiveWebhookResponse, error) {
		return c.ReceiveWebhook(t.Context(), &pb.ReceiveWebhookRequest{
			Pipeline: "hooked", Provider: pb.WebhookProvider_WEBHOOK_PROVIDER_GITLAB, Body: glBody,
			Headers: map[string]string{"X-Gitlab-Token": token, "X-Gitlab-Event-UUID": delivery, "X-Gitlab-Event": "Tag Push Hook"},
		})
	}
	if _, err := gl("nope", "g-1"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("bad gitlab token: %v", err)
	}
	res, err = gl("gl-token-value", "g-1")
	if err != nil || len(res.GetRuns()) != 1 || res.GetRuns()[0].GetTrigger().GetTag() != "v1.0.0" || res.GetRuns()[0].GetTrigger().GetEvent() != "tag_push" {
		t.Fatalf("gitlab tag push: %v %v", res, err)
	}
	waitRun(t, c, res.GetRuns()[0].GetId())
	if _, err := c.ReceiveWebhook(t.Context(), &pb.ReceiveWebhookRequest{Pipeline: "nope", Provider: pb.WebhookProvider_WEBHOOK_PROVIDER_GITHUB}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown pipeline: %v", err)
	}
}

func TestCronTrigger(t *testing.T) {
	inst := newEnv(t).start(t, pipelinerunner.Deps{})
	c := inst.client
	createPipeline(t, c, "ticking", `
triggers:
  cron:
    - {name: fast, spec: "@every 1s", ref: main, variables: {MODE: nightly}}
variables:
  - {name: MODE, default: manual}
steps:
  - {name: a, script: 'echo $MODE'}
`)
	var run *pb.Run
	for i := 0; i < 100 && run == nil; i++ {
		list, err := c.ListRuns(t.Context(), &pb.ListRunsRequest{Pipeline: "ticking"})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.GetRuns()) > 0 {
			run = list.GetRuns()[len(list.GetRuns())-1]
		}
		sleepShort()
	}
	if run == nil {
		t.Fatal("cron schedule never fired")
	}
	if tr := run.GetTrigger(); tr.GetKind() != pb.TriggerKind_TRIGGER_KIND_CRON || tr.GetSchedule() != "fast" || tr.GetBranch() != "main" || run.GetVariables()["MODE"] != "nightly" {
		t.Fatalf("cron run %v", run)
	}
	// Paused pipelines do not fire.
	p, _ := c.GetPipeline(t.Context(), &pb.GetPipelineRequest{Name: "ticking"})
	if p.GetPipeline().GetStatus().GetNextScheduleTime() == nil {
		t.Error("next schedule time not reported")
	}
	if _, err := c.DeletePipeline(t.Context(), &pb.DeletePipelineRequest{Name: "ticking", Force: true}); err != nil {
		t.Fatal(err)
	}
}

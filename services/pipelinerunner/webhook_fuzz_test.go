package pipelinerunner

import (
	"testing"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
)

// FuzzWebhookPayload feeds arbitrary deliveries to the payload readers and
// the signature check: no panic, and a signature never verifies with an
// empty secret.
func FuzzWebhookPayload(f *testing.F) {
	f.Add([]byte(`{"ref":"refs/heads/main","after":"abc","repository":{"full_name":"a/b"}}`), "push", "sha256=00")
	f.Add([]byte(`{"ref":"refs/tags/v1","checkout_sha":"d","project":{"path_with_namespace":"g/p"}}`), "Tag Push Hook", "tok")
	f.Add([]byte(`{"pull_request":{"head":{"ref":"x","sha":"y"}}}`), "pull_request", "")
	f.Fuzz(func(t *testing.T, body []byte, event, sig string) {
		h := map[string]string{"x-github-event": event, "x-gitlab-event": event, "x-hub-signature-256": sig, "x-gitlab-token": sig}
		_, _ = githubFacts(h, body)
		_, _ = gitlabFacts(h, body)
		for _, p := range []pb.WebhookProvider{pb.WebhookProvider_WEBHOOK_PROVIDER_GITHUB, pb.WebhookProvider_WEBHOOK_PROVIDER_GITLAB} {
			if verify(p, h, body, "") {
				t.Fatal("verified with an empty secret")
			}
		}
		_ = triggerFromRef(pb.TriggerKind_TRIGGER_KIND_WEBHOOK, event, string(body), sig)
	})
}

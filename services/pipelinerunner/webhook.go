package pipelinerunner

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pushFacts is what a delivery says about the change.
type pushFacts struct {
	event, ref, commit, repository, actor string
}

func githubFacts(headers map[string]string, body []byte) (pushFacts, error) {
	f := pushFacts{event: headers["x-github-event"]}
	var p struct {
		Ref        string `json:"ref"`
		After      string `json:"after"`
		Repository struct {
			FullName string `json:"full_name"`
		} `json:"repository"`
		Sender struct {
			Login string `json:"login"`
		} `json:"sender"`
		PullRequest *struct {
			Head struct {
				Ref string `json:"ref"`
				SHA string `json:"sha"`
			} `json:"head"`
		} `json:"pull_request"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return f, fmt.Errorf("payload is not JSON: %w", err)
	}
	f.ref, f.commit, f.repository, f.actor = p.Ref, p.After, p.Repository.FullName, p.Sender.Login
	if p.PullRequest != nil {
		f.ref, f.commit = "refs/heads/"+p.PullRequest.Head.Ref, p.PullRequest.Head.SHA
	}
	return f, nil
}

func gitlabFacts(headers map[string]string, body []byte) (pushFacts, error) {
	ev := strings.TrimSuffix(strings.ToLower(headers["x-gitlab-event"]), " hook")
	f := pushFacts{event: strings.ReplaceAll(ev, " ", "_")}
	var p struct {
		Ref          string `json:"ref"`
		CheckoutSHA  string `json:"checkout_sha"`
		After        string `json:"after"`
		UserUsername string `json:"user_username"`
		Project      struct {
			PathWithNamespace string `json:"path_with_namespace"`
		} `json:"project"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return f, fmt.Errorf("payload is not JSON: %w", err)
	}
	f.ref, f.commit, f.repository, f.actor = p.Ref, p.CheckoutSHA, p.Project.PathWithNamespace, p.UserUsername
	if f.commit == "" {
		f.commit = p.After
	}
	return f, nil
}

// verify checks a delivery against one webhook secret in constant time.
func verify(provider pb.WebhookProvider, headers map[string]string, body []byte, secret string) bool {
	if secret == "" {
		return false
	}
	if provider == pb.WebhookProvider_WEBHOOK_PROVIDER_GITHUB {
		sig, ok := strings.CutPrefix(headers["x-hub-signature-256"], "sha256=")
		if !ok {
			return false
		}
		got, err := hex.DecodeString(sig)
		if err != nil {
			return false
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		return hmac.Equal(got, mac.Sum(nil))
	}
	tok := headers["x-gitlab-token"]
	return subtle.ConstantTimeCompare([]byte(tok), []byte(secret)) == 1
}

// ReceiveWebhook verifies a delivery and starts the runs it triggers.
func (s *Service) ReceiveWebhook(ctx context.Context, req *pb.ReceiveWebhookRequest) (*pb.ReceiveWebhookResponse, error) {
	st, err := s.started()
	if err != nil {
		return nil, err
	}
	var provName, deliveryHeader string
	switch req.GetProvider() {
	case pb.WebhookProvider_WEBHOOK_PROVIDER_GITHUB:
		provName, deliveryHeader = "github", "x-github-delivery"
	case pb.WebhookProvider_WEBHOOK_PROVIDER_GITLAB:
		provName, deliveryHeader = "gitlab", "x-gitlab-event-uuid"
	default:
		return nil, fieldErr("provider", "must be github or gitlab")
	}
	headers := map[string]string{}
	for k, v := range req.GetHeaders() {
		headers[strings.ToLower(k)] = v
	}
	pv, err := st.Pipeline(ctx, req.GetPipeline())
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "no pipeline %q", req.GetPipeline())
	}
	p, err := pipelinefile.Parse([]byte(pv.Value.GetSource()))
	if err != nil {
		return nil, toStatus(err)
	}
	var hooks []pipelinefile.Webhook
	for _, w := range p.Webhooks {
		if w.Provider == provName {
			hooks = append(hooks, w)
		}
	}
	if len(hooks) == 0 {
		return nil, status.Errorf(codes.NotFound, "pipeline %s has no %s webhook", req.GetPipeline(), provName)
	}
	verified := false
	for _, w := range hooks {
		vals, err := s.secretValues(ctx, req.GetPipeline(), []string{w.Secret})
		if err != nil {
			return nil, toStatus(err)
		}
		if verify(req.GetProvider(), headers, req.GetBody(), vals[w.Secret]) {
			verified = true
			break
		}
	}
	if !verified {
		s.log.Warn("webhook rejected: bad signature", "pipeline", req.GetPipeline(), "provider", provName, "remote", req.GetRemoteAddress())
		return nil, status.Error(codes.Unauthenticated, "webhook signature or token does not verify")
	}
	delivery := headers[deliveryHeader]
	if delivery == "" && provName == "gitlab" {
		delivery = headers["x-gitlab-webhook-uuid"]
	}
	if delivery == "" {
		return nil, fieldErr("headers."+deliveryHeader, "is required (the delivery id protects against replays)")
	}
	h := sha256.Sum256([]byte(delivery))
	claimKey := "delivery." + provName + "." + req.GetPipeline() + "." + hex.EncodeToString(h[:16])
	prior, fresh, err := st.Claim(ctx, claimKey, []byte{})
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ReceiveWebhookResponse{DeliveryId: delivery}
	if !fresh {
		resp.Duplicate = true
		resp.Message = "delivery seen before; nothing started"
		for _, id := range strings.Split(string(prior), ",") {
			if id == "" {
				continue
			}
			if v, err := st.Run(ctx, id); err == nil {
				resp.Runs = append(resp.Runs, v.Value)
			}
		}
		return resp, nil
	}
	var facts pushFacts
	if provName == "github" {
		facts, err = githubFacts(headers, req.GetBody())
	} else {
		facts, err = gitlabFacts(headers, req.GetBody())
	}
	if err != nil {
		return nil, fieldErr("body", "%v", err)
	}
	if pv.Value.GetPaused() {
		resp.Message = "pipeline is paused; delivery ignored"
		return resp, nil
	}
	trig := triggerFromRef(pb.TriggerKind_TRIGGER_KIND_WEBHOOK, facts.event, facts.ref, facts.commit)
	trig.Repository, trig.Actor, trig.DeliveryId = facts.repository, facts.actor, delivery
	var reasons []string
	for _, w := range hooks {
		switch {
		case !slices.Contains(w.Events, facts.event):
			reasons = append(reasons, fmt.Sprintf("event %s ignored", facts.event))
		case w.Repository != "" && !strings.EqualFold(w.Repository, facts.repository):
			reasons = append(reasons, fmt.Sprintf("repository %s does not match %s", facts.repository, w.Repository))
		case trig.GetTag() == "" && !pipelinefile.BranchMatches(w.Branches, trig.GetBranch()):
			reasons = append(reasons, fmt.Sprintf("branch %s does not match %s", trig.GetBranch(), strings.Join(w.Branches, ", ")))
		default:
			run, err := s.queueRun(ctx, req.GetPipeline(), trig, nil, nil, 0)
			if err != nil {
				return nil, err
			}
			resp.Runs = append(resp.Runs, run)
			_ = st.SetClaim(ctx, claimKey, []byte(run.GetId()))
			return resp, nil
		}
	}
	resp.Message = strings.Join(slices.Compact(reasons), "; ")
	return resp, nil
}

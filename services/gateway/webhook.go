package gateway

import (
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	prv1 "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// maxWebhookBody bounds a webhook delivery (GitHub caps payloads at 25 MB;
// push payloads are far smaller).
const maxWebhookBody = 4 << 20

// webhookHandler serves POST /v1/webhooks/{provider}/{pipeline}: the body
// and headers go to the pipeline-runner unchanged, which verifies the
// provider's signature (GitHub HMAC, GitLab token) — webhooks carry no API
// token.
func webhookHandler(c prv1.PipelineRunnerServiceClient) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var provider prv1.WebhookProvider
		switch r.PathValue("provider") {
		case "github":
			provider = prv1.WebhookProvider_WEBHOOK_PROVIDER_GITHUB
		case "gitlab":
			provider = prv1.WebhookProvider_WEBHOOK_PROVIDER_GITLAB
		default:
			writeStatus(w, http.StatusNotFound, status.Newf(codes.NotFound, "no webhook provider %q: use github or gitlab", r.PathValue("provider")))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeStatus(w, http.StatusRequestEntityTooLarge, status.Newf(codes.InvalidArgument, "webhook body over %d bytes", maxWebhookBody))
				return
			}
			writeStatus(w, http.StatusBadRequest, status.Newf(codes.InvalidArgument, "read body: %v", err))
			return
		}
		headers := make(map[string]string, len(r.Header))
		for k, v := range r.Header {
			headers[strings.ToLower(k)] = strings.Join(v, ", ")
		}
		resp, err := c.ReceiveWebhook(r.Context(), &prv1.ReceiveWebhookRequest{
			Pipeline: r.PathValue("pipeline"), Provider: provider, Headers: headers, Body: body, RemoteAddress: r.RemoteAddr,
		})
		if err != nil {
			st := status.Convert(err)
			writeStatus(w, runtime.HTTPStatusFromCode(st.Code()), st)
			return
		}
		out, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(resp)
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, status.Convert(err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	}
}

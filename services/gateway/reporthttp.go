package gateway

import (
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	"github.com/opsuite/opsuite/pkg/validation"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
)

// reportHandler serves GET /v1/report?format=markdown|html|json with the
// rendered report as the body (JSON is the structured report), so a
// browser or `curl` gets the document itself.
func reportHandler(c gatewayv1.ReportServiceClient) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := &gatewayv1.GetReportRequest{Application: q.Get("application")}
		v := validation.New("request")
		switch strings.ToLower(q.Get("format")) {
		case "", "json":
			req.Format = gatewayv1.ReportFormat_REPORT_FORMAT_JSON
		case "markdown", "md":
			req.Format = gatewayv1.ReportFormat_REPORT_FORMAT_MARKDOWN
		case "html":
			req.Format = gatewayv1.ReportFormat_REPORT_FORMAT_HTML
		default:
			v.Add("format", "%q: use markdown, html or json", q.Get("format"))
		}
		if s := q.Get("window"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				v.Add("window", "%q is not a duration such as 24h", s)
			}
			req.Window = durationpb.New(d)
		}
		if err := v.Err(); err != nil {
			writeStatus(w, http.StatusBadRequest, status.Convert(err))
			return
		}
		ctx := r.Context()
		if a := r.Header.Get("Authorization"); a != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", a)
		}
		resp, err := c.GetReport(ctx, req)
		if err != nil {
			st := status.Convert(err)
			writeStatus(w, runtime.HTTPStatusFromCode(st.Code()), st)
			return
		}
		if req.Format == gatewayv1.ReportFormat_REPORT_FORMAT_JSON {
			body, err := protojson.MarshalOptions{UseProtoNames: true, Indent: "  "}.Marshal(resp.GetReport())
			if err != nil {
				writeStatus(w, http.StatusInternalServerError, status.Convert(err))
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
			return
		}
		w.Header().Set("Content-Type", resp.GetContentType())
		_, _ = w.Write([]byte(resp.GetRendered()))
	}
}

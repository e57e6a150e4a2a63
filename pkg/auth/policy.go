package auth

import (
	"strings"

	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
)

// Role aliases the API's roles; higher includes lower.
type Role = gatewayv1.Role

// Roles, from least to most.
const (
	RoleNone     = gatewayv1.Role_ROLE_UNSPECIFIED
	RoleViewer   = gatewayv1.Role_ROLE_VIEWER
	RoleOperator = gatewayv1.Role_ROLE_OPERATOR
	RoleAdmin    = gatewayv1.Role_ROLE_ADMIN
)

// public methods need no token: health probes, reflection (the schema is
// public anyway, in /openapi.json), and webhooks, which prove themselves
// with a signature checked by the service.
func public(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.Health/") ||
		strings.HasPrefix(method, "/grpc.reflection.") ||
		method == "/opsuite.pipelinerunner.v1.PipelineRunnerService/ReceiveWebhook"
}

// operatorMethods change what runs, not how the suite is configured:
// deploying, promoting, running pipelines, acknowledging alerts, pushing
// data.
var operatorMethods = map[string]bool{
	// deployer
	"CreateApplication": true, "UpdateApplication": true, "DeleteApplication": true,
	"Deploy": true, "Promote": true, "Pause": true, "Resume": true, "Abort": true, "Rollback": true, "Scale": true,
	"ImportCompose": true, "StopCompose": true,
	"CreateContainer": true, "StartContainer": true, "StopContainer": true, "RemoveContainer": true,
	// pipeline-runner
	"CreatePipeline": true, "UpdatePipeline": true, "DeletePipeline": true,
	"RunPipeline": true, "CancelRun": true, "RerunRun": true,
	// monitor
	"AcknowledgeAlert": true, "CreateSilence": true, "UpdateSilence": true, "DeleteSilence": true,
	"PushMetrics": true, "PushMetricsStream": true,
	// log-aggregator
	"Ingest": true, "IngestStream": true,
	// health-checker: running checks now, and TTL targets' heartbeats
	"RunChecks": true, "Heartbeat": true,
}

// readPrefixes name the methods that only read.
var readPrefixes = []string{"Get", "List", "Watch", "Query", "Tail", "Stream", "Describe"}

// readMethods only read, whatever their name.
var readMethods = map[string]bool{
	"PlanDeploy": true, "ValidatePipeline": true, "IsAlertFiring": true, "AnalyzeCanary": true,
	"WhoAmI": true, "ExportRuleFile": true,
}

// Required is the least role a method needs; RoleNone for public methods.
// Anything not known to read or to be an operator's action needs admin, so
// a new RPC is safe until it is classified.
func Required(method string) Role {
	if public(method) {
		return RoleNone
	}
	name := method[strings.LastIndex(method, "/")+1:]
	if strings.HasPrefix(method, "/opsuite.gateway.v1.AccessService/") && name != "WhoAmI" {
		return RoleAdmin
	}
	if readMethods[name] {
		return RoleViewer
	}
	for _, p := range readPrefixes {
		if strings.HasPrefix(name, p) {
			return RoleViewer
		}
	}
	if operatorMethods[name] {
		return RoleOperator
	}
	return RoleAdmin
}

// dataPlane methods carry data (samples, log lines, heartbeats) at high
// rates; they change no configuration and are not audited one by one.
var dataPlane = map[string]bool{
	"PushMetrics": true, "PushMetricsStream": true, "Ingest": true, "IngestStream": true, "Heartbeat": true,
}

// Changes reports whether a method changes the suite's state and is
// audited: every operator's or admin's call except the data plane.
func Changes(method string) bool {
	r := Required(method)
	return (r == RoleOperator || r == RoleAdmin) && !dataPlane[method[strings.LastIndex(method, "/")+1:]]
}

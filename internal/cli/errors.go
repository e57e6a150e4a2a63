package cli

import (
	"fmt"
	"os"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

// APIError is an error answer of the gateway (a google.rpc.Status), with
// what the person can do about it.
type APIError struct {
	// HTTPStatus is 0 for an error inside a stream.
	HTTPStatus int
	Code       codes.Code
	Message    string
	// Violations are the field violations of an InvalidArgument answer.
	Violations []*errdetails.BadRequest_FieldViolation
	// Hint says what to do, when there is something to say.
	Hint string
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString(e.Message)
	if e.Message == "" {
		fmt.Fprintf(&b, "HTTP %d", e.HTTPStatus)
	}
	if len(e.Violations) > 0 {
		b.WriteString("\nfield violations:")
		for _, v := range e.Violations {
			fmt.Fprintf(&b, "\n  - %s: %s", v.GetField(), v.GetDescription())
		}
	}
	if e.Hint != "" {
		b.WriteString("\nhint: ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// apiError decodes an error body and adds the hint that fits it.
func (c *client) apiError(method, path string, httpStatus int, body []byte) error {
	e := decodeStatus(httpStatus, body)
	if e.Message == "" {
		e.Message = fmt.Sprintf("%s %s: HTTP %d %s", method, path, httpStatus, strings.TrimSpace(string(truncate(body, 200))))
	}
	e.Hint = hintFor(e, c.settings)
	return e
}

// decodeStatus reads a google.rpc.Status body; a body that is not one
// leaves Message empty.
func decodeStatus(httpStatus int, body []byte) *APIError {
	e := &APIError{HTTPStatus: httpStatus, Code: codeFromHTTP(httpStatus)}
	st := &spb.Status{}
	if err := unmarshal.Unmarshal(body, st); err != nil {
		return e
	}
	if st.GetCode() != 0 {
		e.Code = codes.Code(st.GetCode())
	}
	e.Message = st.GetMessage()
	for _, d := range st.GetDetails() {
		br := &errdetails.BadRequest{}
		if d.MessageIs(br) && d.UnmarshalTo(br) == nil {
			e.Violations = append(e.Violations, br.GetFieldViolations()...)
		}
	}
	return e
}

func codeFromHTTP(s int) codes.Code {
	switch s {
	case 400:
		return codes.InvalidArgument
	case 401:
		return codes.Unauthenticated
	case 403:
		return codes.PermissionDenied
	case 404:
		return codes.NotFound
	case 409:
		return codes.AlreadyExists
	case 413:
		return codes.InvalidArgument
	case 503:
		return codes.Unavailable
	}
	return codes.Unknown
}

// hintFor says what to do about an error answer.
func hintFor(e *APIError, s Settings) string {
	switch e.Code {
	case codes.Unauthenticated:
		if s.Token == "" {
			return fmt.Sprintf("no token was sent: pass one with --token, $OPSUITE_TOKEN or `token:` in %s; "+
				"`opsuite up` prints the admin token at its first start (or takes $OPSUITE_ADMIN_TOKEN), "+
				"and an admin makes more with `opsuite token create NAME --role viewer|operator|admin`", s.ConfigPath)
		}
		return fmt.Sprintf("the token from %s was refused (unknown, revoked or expired): use another with --token, $OPSUITE_TOKEN or `token:` in %s", s.TokenFrom, s.ConfigPath)
	case codes.PermissionDenied:
		return "the token's role may not do this (the message names the role needed): ask an admin for a token with that role (`opsuite token create NAME --role ROLE`)"
	case codes.Unavailable:
		return fmt.Sprintf("the service behind %s is not available: is it running (`opsuite up` runs every service)?", s.Server)
	}
	if e.HTTPStatus == 404 && strings.HasPrefix(e.Message, "no route for") {
		return fmt.Sprintf("the server at %s does not serve this route: is it an opsuite gateway running the service?", s.Server)
	}
	return ""
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func lookupEnv(k string) string { return os.Getenv(k) }

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

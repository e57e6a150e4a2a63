package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// client calls the REST gateway.
type client struct {
	settings Settings
	http     *http.Client
}

// maxResponse bounds a non-streamed response body.
const maxResponse = 64 << 20

var (
	unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}
	marshal   = protojson.MarshalOptions{UseProtoNames: true}
)

// client resolves the connection settings of cmd.
func (e *env) client(cmd *cobra.Command) (*client, error) {
	s, err := Resolve(e.conn.server, e.conn.token, e.conn.config, lookupEnv, readFile)
	if err != nil {
		return nil, err
	}
	return &client{settings: s, http: &http.Client{}}, nil
}

// do sends a request with body (a message marshalled as JSON, or nil) and
// decodes the answer into out (nil to discard).
func (c *client) do(ctx context.Context, method, path string, query url.Values, body, out proto.Message) error {
	resp, err := c.send(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return c.apiError(method, path, resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := unmarshal.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// raw sends a GET and returns the body as it is.
func (c *client) raw(ctx context.Context, path string, query url.Values) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, path, query, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("GET %s: read answer: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, c.apiError(http.MethodGet, path, resp.StatusCode, data)
	}
	return data, nil
}

// stream opens a server stream (newline-delimited JSON, {"result": …} or
// {"error": …} a line) and calls fn with each message decoded into a fresh
// newMsg(), until the stream ends, fn returns an error, or ctx ends. A
// stream the server closes returns io.EOF.
func (c *client) stream(ctx context.Context, path string, query url.Values, newMsg func() proto.Message, fn func(proto.Message) error) error {
	resp, err := c.send(ctx, http.MethodGet, path, query, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
		return c.apiError(http.MethodGet, path, resp.StatusCode, data)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxResponse)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var chunk struct {
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(line, &chunk); err != nil {
			return fmt.Errorf("GET %s: undecodable stream line %.200q: %w", path, line, err)
		}
		if len(chunk.Error) > 0 && string(chunk.Error) != "null" {
			return c.apiError(http.MethodGet, path, 0, chunk.Error)
		}
		m := newMsg()
		if err := unmarshal.Unmarshal(chunk.Result, m); err != nil {
			return fmt.Errorf("GET %s: decode stream message: %w", path, err)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("GET %s: stream: %w", path, err)
	}
	return io.EOF
}

func (c *client) send(ctx context.Context, method, path string, query url.Values, body proto.Message) (*http.Response, error) {
	u := c.settings.Server + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		data, err := marshal.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(data)
	} else if method == http.MethodPost {
		rd = strings.NewReader("{}")
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.settings.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.settings.Token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, c.transportError(err)
	}
	return resp, nil
}

// transportError says what to do when the server does not answer.
func (c *client) transportError(err error) error {
	s := c.settings
	if errors.Is(err, syscall.ECONNREFUSED) || isNoSuchHost(err) {
		return fmt.Errorf("cannot reach the opsuite server at %s: %w\nhint: is `opsuite up` running at %s? "+
			"The address came from %s; set another with --server, $OPSUITE_SERVER or `server:` in %s",
			s.Server, err, s.Server, s.ServerFrom, s.ConfigPath)
	}
	return fmt.Errorf("call %s: %w", s.Server, err)
}

func isNoSuchHost(err error) bool {
	return strings.Contains(err.Error(), "no such host")
}

// waitCtx bounds ctx by timeout when timeout is positive.
func waitCtx(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout > 0 {
		return context.WithTimeout(ctx, timeout)
	}
	return context.WithCancel(ctx)
}

package cli

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	gatewayv1 "github.com/opsuite/opsuite/gen/opsuite/gateway/v1"
	"github.com/spf13/cobra"
)

func (e *env) reportCmd() *cobra.Command {
	var format, app string
	var window time.Duration
	c := &cobra.Command{
		Use:   "report",
		Short: "The deployment report: health, metrics, alerts, errors, rollouts and pipeline runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := strings.ToLower(format)
			switch f {
			case "markdown", "md", "html", "json":
			default:
				return usagef("--format %q: use markdown, html or json", format)
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{"format": {f}}
			setIf(q, "application", app)
			if window > 0 {
				q.Set("window", window.String())
			}
			body, err := cl.raw(cmd.Context(), "/v1/report", q)
			if err != nil {
				return fmt.Errorf("get report: %w", err)
			}
			if f == "json" {
				// Decode into the typed report so the output is checked and
				// printed like every other JSON answer.
				rep := &gatewayv1.Report{}
				if err := unmarshal.Unmarshal(body, rep); err != nil {
					return fmt.Errorf("decode report: %w", err)
				}
				data, err := JSON(rep)
				if err != nil {
					return err
				}
				_, err = e.stdout.Write(data)
				return err
			}
			if !bytes.HasSuffix(body, []byte("\n")) {
				body = append(body, '\n')
			}
			_, err = e.stdout.Write(body)
			return err
		},
	}
	c.Flags().StringVar(&format, "format", "markdown", "markdown, html or json")
	c.Flags().StringVar(&app, "app", "", "only this application")
	c.Flags().DurationVar(&window, "window", 0, "period for alerts, errors, rollouts and runs (server default 24h)")
	_ = c.RegisterFlagCompletionFunc("format", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"markdown", "html", "json"}, cobra.ShellCompDirectiveNoFileComp
	})
	return c
}

func (e *env) tokenCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "token",
		Aliases: []string{"tokens"},
		Short:   "API tokens (admin): create, list, revoke",
	}
	c.AddCommand(e.tokenCreateCmd(), e.tokenListCmd(), e.tokenRevokeCmd())
	return c
}

func roleNames() []string { return EnumChoices(gatewayv1.Role(0).Descriptor()) }

func (e *env) tokenCreateCmd() *cobra.Command {
	var out, role, description string
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "create NAME --role viewer|operator|admin",
		Short: "Create a token and print its secret (shown only once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			if role == "" {
				return usagef("--role is required: %s", strings.Join(roleNames(), ", "))
			}
			n, ok := ParseEnum(gatewayv1.Role(0).Descriptor(), role)
			if !ok {
				return usagef("--role %q: use %s", role, strings.Join(roleNames(), ", "))
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			tok := &gatewayv1.Token{Name: args[0], Role: gatewayv1.Role(n), Description: description}
			q := url.Values{}
			if ttl > 0 {
				q.Set("ttl", ProtoDuration(ttl))
			}
			resp := &gatewayv1.CreateTokenResponse{}
			if err := cl.do(cmd.Context(), http.MethodPost, "/v1/tokens", q, tok, resp); err != nil {
				return fmt.Errorf("create token %s: %w", args[0], err)
			}
			if out != "table" {
				return printObject(e.stdout, out, resp, nil)
			}
			fmt.Fprintf(e.stdout, "token %s (%s) created; its secret, shown only now:\n%s\n", resp.GetToken().GetName(), EnumName(resp.GetToken().GetRole()), resp.GetSecret())
			fmt.Fprintf(e.stderr, "use it with --token, $OPSUITE_TOKEN or `token:` in the config file\n")
			return nil
		},
	}
	outputFlag(c.Flags(), &out)
	c.Flags().StringVar(&role, "role", "", "viewer (read), operator (deploy, run, promote, abort, acknowledge) or admin")
	c.Flags().StringVar(&description, "description", "", "what the token is for")
	c.Flags().DurationVar(&ttl, "ttl", 0, "lifetime, e.g. 720h (default: no expiry)")
	_ = c.RegisterFlagCompletionFunc("role", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return roleNames(), cobra.ShellCompDirectiveNoFileComp
	})
	return c
}

func (e *env) tokenListCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "list",
		Short: "List tokens (without their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			resp := &gatewayv1.ListTokensResponse{}
			if err := cl.do(cmd.Context(), http.MethodGet, "/v1/tokens", url.Values{"page_size": {"1000"}}, nil, resp); err != nil {
				return fmt.Errorf("list tokens: %w", err)
			}
			return printObject(e.stdout, out, resp, func() *table { return TokensTable(resp.GetTokens(), time.Now()) })
		},
	}
	outputFlag(c.Flags(), &out)
	return c
}

// TokensTable is one row per token.
func TokensTable(ts []*gatewayv1.Token, now time.Time) *table {
	t := newTable("NAME", "ROLE", "CREATOR", "AGE", "LAST USED", "EXPIRES", "REVOKED", "DESCRIPTION")
	for _, tk := range ts {
		expires := ""
		if ex := tk.GetExpireTime(); ex.IsValid() && ex.GetSeconds() != 0 {
			if d := ex.AsTime().Sub(now); d > 0 {
				expires = "in " + ShortDuration(d)
			} else {
				expires = "expired"
			}
		}
		used := Age(tk.GetLastUsedTime(), now)
		if used != "" {
			used += " ago"
		}
		t.add(tk.GetName(), EnumName(tk.GetRole()), tk.GetCreator(), Age(tk.GetCreateTime(), now), used, expires,
			strconv.FormatBool(tk.GetRevoked()), tk.GetDescription())
	}
	return t
}

func (e *env) tokenRevokeCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token at once, everywhere",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			resp := &gatewayv1.RevokeTokenResponse{}
			if err := cl.do(cmd.Context(), http.MethodPost, "/v1/tokens/"+url.PathEscape(args[0])+":revoke", nil, nil, resp); err != nil {
				return fmt.Errorf("revoke token %s: %w", args[0], err)
			}
			if out != "table" {
				return printObject(e.stdout, out, resp.GetToken(), nil)
			}
			_, err = fmt.Fprintf(e.stdout, "token %s revoked\n", args[0])
			return err
		},
	}
	outputFlag(c.Flags(), &out)
	return c
}

func (e *env) whoamiCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "whoami",
		Short: "Which token the server sees, its role, and the server's address",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			cl, err := e.client(cmd)
			if err != nil {
				return err
			}
			resp := &gatewayv1.WhoAmIResponse{}
			if err := cl.do(cmd.Context(), http.MethodGet, "/v1/whoami", nil, nil, resp); err != nil {
				return fmt.Errorf("whoami: %w", err)
			}
			return printObject(e.stdout, out, resp, func() *table {
				t := newTable("TOKEN", "ROLE", "SERVER", "TOKEN FROM")
				t.add(resp.GetTokenName(), EnumName(resp.GetRole()), cl.settings.Server, cl.settings.TokenFrom)
				return t
			})
		},
	}
	outputFlag(c.Flags(), &out)
	return c
}

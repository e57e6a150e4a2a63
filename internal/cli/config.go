package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// DefaultServer is where `opsuite up` serves REST by default.
const DefaultServer = "http://127.0.0.1:8080"

// FileConfig is ~/.config/opsuite/config.yaml.
type FileConfig struct {
	// Server is the gateway's address, e.g. http://127.0.0.1:8080.
	Server string `json:"server,omitempty"`
	// Token is the bearer secret sent on every call.
	Token string `json:"token,omitempty"`
}

// Settings are the connection settings a command ends up with, and where
// each came from (for error hints).
type Settings struct {
	Server      string
	ServerFrom  string
	Token       string
	TokenFrom   string
	ConfigPath  string
	ConfigFound bool
}

// connFlags are the flags every client command has.
type connFlags struct {
	server string
	token  string
	config string
}

func (c *connFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&c.server, "server", "", "gateway address (default: $OPSUITE_SERVER, the config file, then "+DefaultServer+")")
	fs.StringVar(&c.token, "token", "", "API token (default: $OPSUITE_TOKEN, then the config file)")
	fs.StringVar(&c.config, "config", "", "config file (default: $OPSUITE_CONFIG or ~/.config/opsuite/config.yaml)")
}

// DefaultConfigPath is $OPSUITE_CONFIG, else config.yaml under the user's
// config directory (~/.config/opsuite on Linux).
func DefaultConfigPath(getenv func(string) string) string {
	if p := getenv("OPSUITE_CONFIG"); p != "" {
		return p
	}
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := getenv("HOME")
		if home == "" {
			if h, err := os.UserHomeDir(); err == nil {
				home = h
			}
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "opsuite", "config.yaml")
}

// Resolve picks each setting by precedence: flag, environment, config file,
// default.
func Resolve(flagServer, flagToken, configPath string, getenv func(string) string, readFile func(string) ([]byte, error)) (Settings, error) {
	s := Settings{ConfigPath: configPath}
	if s.ConfigPath == "" {
		s.ConfigPath = DefaultConfigPath(getenv)
	}
	var fc FileConfig
	data, err := readFile(s.ConfigPath)
	switch {
	case err == nil:
		if err := yaml.UnmarshalStrict(data, &fc); err != nil {
			return s, fmt.Errorf("config file %s: %w (keys: server, token)", s.ConfigPath, err)
		}
		s.ConfigFound = true
	case errors.Is(err, fs.ErrNotExist) && configPath == "":
	default:
		return s, fmt.Errorf("read config file: %w", err)
	}
	pick := func(flagVal, envName, fileVal, def string) (string, string) {
		switch {
		case flagVal != "":
			return flagVal, "flag"
		case getenv(envName) != "":
			return getenv(envName), "$" + envName
		case fileVal != "":
			return fileVal, s.ConfigPath
		}
		return def, "default"
	}
	s.Server, s.ServerFrom = pick(flagServer, "OPSUITE_SERVER", fc.Server, DefaultServer)
	s.Token, s.TokenFrom = pick(flagToken, "OPSUITE_TOKEN", fc.Token, "")
	s.Token = strings.TrimSpace(s.Token)
	base, err := NormalizeServer(s.Server)
	if err != nil {
		return s, &UsageError{Err: fmt.Errorf("server address %q (from %s): %w", s.Server, s.ServerFrom, err)}
	}
	s.Server = base
	return s, nil
}

// NormalizeServer accepts "host:port" or an http(s) URL and returns the
// URL without a trailing slash.
func NormalizeServer(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return "", errors.New("empty")
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("scheme %q: use http or https", u.Scheme)
	}
	if u.Host == "" {
		return "", errors.New("no host")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

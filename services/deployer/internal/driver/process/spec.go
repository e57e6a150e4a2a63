//go:build linux

package process

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// idPattern is an RFC 1123 label, which also makes the id safe as a file name.
var idPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

var portNamePattern = regexp.MustCompile(`^[A-Za-z0-9]([-_A-Za-z0-9]*[A-Za-z0-9])?$`)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", driver.ErrInvalidSpec, fmt.Sprintf(format, args...))
}

// resolve checks spec and returns the absolute program path and working
// directory the replica runs with. Resolving them once at Start keeps
// restarts, also by a later driver, running the same program in the same place.
func resolve(spec driver.Spec) (path, dir string, err error) {
	if !idPattern.MatchString(spec.ID) {
		return "", "", invalid("id %q is not a DNS-1123 label", spec.ID)
	}
	if len(spec.Command) == 0 || spec.Command[0] == "" {
		return "", "", invalid("command is required by the process driver")
	}
	if len(spec.Volumes) > 0 {
		return "", "", invalid("volumes are not supported by the process driver")
	}
	for _, a := range slices.Concat(spec.Command, spec.Args) {
		if strings.ContainsRune(a, 0) {
			return "", "", invalid("argument %q contains a NUL byte", a)
		}
	}
	for k, v := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return "", "", invalid("environment variable %q is not valid", k)
		}
	}
	envNames := map[string]string{}
	for i, p := range spec.Ports {
		switch p.Protocol {
		case "", "tcp", "udp":
		default:
			return "", "", invalid("ports[%d]: protocol %q is neither tcp nor udp", i, p.Protocol)
		}
		if p.Name == "" {
			continue
		}
		if !portNamePattern.MatchString(p.Name) {
			return "", "", invalid("ports[%d]: name %q must be letters, digits, '-' or '_'", i, p.Name)
		}
		env := portEnv(p.Name)
		if other, ok := envNames[env]; ok {
			return "", "", invalid("ports[%d]: name %q clashes with %q (both set %s)", i, p.Name, other, env)
		}
		envNames[env] = p.Name
	}

	dir = spec.WorkingDir
	if dir == "" {
		if dir, err = os.Getwd(); err != nil {
			return "", "", fmt.Errorf("working directory: %w", err)
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", "", invalid("working directory %q: %v", spec.WorkingDir, err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return "", "", fmt.Errorf("%w: working directory: %w", driver.ErrInvalidSpec, err)
	} else if !fi.IsDir() {
		return "", "", invalid("working directory %s is not a directory", dir)
	}

	path = spec.Command[0]
	if strings.ContainsRune(path, '/') && !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	if path, err = exec.LookPath(path); err != nil {
		return "", "", fmt.Errorf("%w: %w", driver.ErrInvalidSpec, err)
	}
	if path, err = filepath.Abs(path); err != nil {
		return "", "", invalid("program %q: %v", spec.Command[0], err)
	}
	return path, dir, nil
}

// portEnv is the variable a named port is passed in: PORT_<NAME>.
func portEnv(name string) string {
	return "PORT_" + strings.Map(func(r rune) rune {
		if r == '-' {
			return '_'
		}
		return r
	}, strings.ToUpper(name))
}

// environ is the replica's environment: the deployer's, then the spec's,
// then the assigned ports and the replica marker (later entries win).
func environ(rec *record) []string {
	env := os.Environ()
	for _, k := range slices.Sorted(maps.Keys(rec.Spec.Env)) {
		env = append(env, k+"="+rec.Spec.Env[k])
	}
	for i, b := range rec.Bindings {
		port := strconv.Itoa(b.HostPort)
		if i == 0 {
			env = append(env, "PORT="+port)
		}
		if b.Name != "" {
			env = append(env, portEnv(b.Name)+"="+port)
		}
	}
	return append(env, markerEnv+"="+rec.Spec.ID)
}

// portKey names a reserved loopback port in Driver.ports.
func portKey(protocol string, port int) string {
	if protocol == "" {
		protocol = "tcp"
	}
	return protocol + "/" + strconv.Itoa(port)
}

// allocatePorts picks a free loopback port for each spec port and reserves
// it for id. The returned closer frees the sockets that held the ports
// while choosing; call it just before the process starts.
func (d *Driver) allocatePorts(id string, ports []driver.Port) (_ []driver.Binding, closeAll func(), err error) {
	var held []interface{ Close() error }
	closeAll = func() {
		for _, c := range held {
			_ = c.Close()
		}
		held = nil
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	var bindings []driver.Binding
	for _, p := range ports {
		var port int
		for attempt := 0; ; attempt++ {
			if attempt == 100 {
				return nil, nil, fmt.Errorf("port %s: no free loopback port found", p.Name)
			}
			var c interface{ Close() error }
			if p.Protocol == "udp" {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					return nil, nil, fmt.Errorf("port %s: %w", p.Name, err)
				}
				c, port = pc, pc.LocalAddr().(*net.UDPAddr).Port
			} else {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					return nil, nil, fmt.Errorf("port %s: %w", p.Name, err)
				}
				c, port = l, l.Addr().(*net.TCPAddr).Port
			}
			held = append(held, c)
			if _, taken := d.ports[portKey(p.Protocol, port)]; !taken {
				break
			}
		}
		d.ports[portKey(p.Protocol, port)] = id
		bindings = append(bindings, driver.Binding{Name: p.Name, ContainerPort: p.ContainerPort, HostIP: "127.0.0.1", HostPort: port})
	}
	return bindings, closeAll, nil
}

// releasePorts frees the ports reserved for a replica. Callers hold d.mu.
func (d *Driver) releasePorts(id string) {
	for k, owner := range d.ports {
		if owner == id {
			delete(d.ports, k)
		}
	}
}

// isSpecError reports whether a failure to start the program is the spec's
// fault (missing program, not executable, bad working directory).
func isSpecError(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) ||
		errors.Is(err, syscall.ENOEXEC) || errors.Is(err, syscall.ENOTDIR)
}

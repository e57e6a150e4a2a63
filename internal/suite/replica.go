package suite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/opsuite/opsuite/pkg/lease"
)

var replicaIDRE = regexp.MustCompile(`^[-_=A-Za-z0-9]{1,64}$`)

// replicaID is the process's name among replicas sharing one NATS: kept in
// <data-dir>/replica-id, made once (host name and a random suffix), so a
// restarted process is the same replica and takes its leases back at once
// rather than waiting for them to expire. Two replicas need two data dirs.
func replicaID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "replica-id")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(b))
		if !replicaIDRE.MatchString(id) {
			return "", fmt.Errorf("replica id in %s: %q is not 1-64 letters, digits, '-', '_' or '='", path, id)
		}
		return id, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read replica id: %w", err)
	}
	id := lease.DefaultHolder()
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return "", fmt.Errorf("replica id: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o640); err != nil {
		return "", fmt.Errorf("write replica id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write replica id: %w", err)
	}
	return id, nil
}

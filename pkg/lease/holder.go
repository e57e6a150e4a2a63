package lease

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var holderRE = regexp.MustCompile(`^[-_=A-Za-z0-9]{1,64}$`)

// CheckHolder reports whether id can name a holder: 1-64 letters, digits,
// '-', '_' or '='.
func CheckHolder(id string) error {
	if !holderRE.MatchString(id) {
		return fmt.Errorf("replica id %q: want 1-64 letters, digits, '-', '_' or '='", id)
	}
	return nil
}

// KeptHolder is a holder id kept in dir/replica-id, made on first use
// (DefaultHolder) and read back after, so a restarted process is the same
// holder and takes its leases back at once instead of waiting for them to
// expire. Two live processes need two dirs.
func KeptHolder(dir string) (string, error) {
	path := filepath.Join(dir, "replica-id")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(b))
		if err := CheckHolder(id); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		return id, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read replica id: %w", err)
	}
	id := DefaultHolder()
	if err := os.MkdirAll(dir, 0o750); err != nil {
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

//go:build linux

package process

import (
	"os"
	"path/filepath"

	"github.com/opsuite/opsuite/services/deployer/internal/driver"
)

// WriteInterruptedStart leaves in stateDir what a Start leaves when the
// deployer dies between starting the process and recording its pid.
func WriteInterruptedStart(stateDir string, spec driver.Spec) error {
	path, dir, err := resolve(spec)
	if err != nil {
		return err
	}
	bootID, err := readBootID()
	if err != nil {
		return err
	}
	rec := record{Version: recordVersion, Spec: spec, Path: path, Dir: dir, BootID: bootID, Phase: phaseLaunching}
	replicaDir := filepath.Join(stateDir, spec.ID)
	if err := os.Mkdir(replicaDir, 0o700); err != nil {
		return err
	}
	return rec.save(replicaDir)
}

package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	pb "github.com/opsuite/opsuite/gen/opsuite/pipelinerunner/v1"
	"github.com/opsuite/opsuite/services/pipelinerunner/internal/pipelinefile"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ArtifactPath is where an artifact's bytes are kept.
func ArtifactPath(root, run, step, rel string) string {
	return filepath.Join(root, run, step, filepath.FromSlash(rel))
}

// keepArtifacts copies the files matching the step's artifact paths out of
// the workspace, one artifact per file (directories are walked).
func (r *runner) keepArtifacts(runID string, in *pipelinefile.Instance) ([]*pb.Artifact, error) {
	ws := r.e.workspace(runID)
	seen := map[string]bool{}
	var out []*pb.Artifact
	var firstErr error
	keep := func(rel string) {
		if seen[rel] {
			return
		}
		seen[rel] = true
		a, err := copyArtifact(ws, ArtifactPath(r.e.ArtifactRoot, runID, in.ID, rel), rel)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		a.Run, a.Step = runID, in.ID
		out = append(out, a)
	}
	for _, pattern := range in.Step.Artifacts {
		matches, err := filepath.Glob(filepath.Join(ws, filepath.FromSlash(path.Clean(pattern))))
		if err != nil {
			return out, fmt.Errorf("glob %q: %w", pattern, err)
		}
		if len(matches) == 0 && firstErr == nil {
			firstErr = fmt.Errorf("%q matched no file", pattern)
		}
		for _, m := range matches {
			_ = filepath.WalkDir(m, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || !d.Type().IsRegular() {
					return nil
				}
				rel, err := filepath.Rel(ws, p)
				if err != nil || strings.HasPrefix(rel, "..") {
					return nil
				}
				keep(filepath.ToSlash(rel))
				return nil
			})
		}
	}
	return out, firstErr
}

func copyArtifact(ws, dst, rel string) (*pb.Artifact, error) {
	src, err := os.Open(filepath.Join(ws, filepath.FromSlash(rel)))
	if err != nil {
		return nil, fmt.Errorf("artifact %s: %w", rel, err)
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return nil, fmt.Errorf("artifact %s: %w", rel, err)
	}
	f, err := os.Create(dst)
	if err != nil {
		return nil, fmt.Errorf("artifact %s: %w", rel, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("artifact %s: %w", rel, err)
	}
	return &pb.Artifact{Path: rel, SizeBytes: n, Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), CreateTime: timestamppb.Now()}, nil
}

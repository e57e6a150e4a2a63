package lease_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/opsuite/opsuite/pkg/lease"
)

func TestKeptHolderIsKeptInTheDir(t *testing.T) {
	dir := t.TempDir()
	a, err := lease.KeptHolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := lease.KeptHolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a == "" || a != b {
		t.Fatalf("replica id %q then %q, want one stable id", a, b)
	}
	other, err := lease.KeptHolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if other == a {
		t.Fatalf("two data dirs share replica id %q", a)
	}
	if err := os.WriteFile(filepath.Join(dir, "replica-id"), []byte("bad id!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := lease.KeptHolder(dir); err == nil {
		t.Fatal("a malformed replica id was accepted")
	}
}

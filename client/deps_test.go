package client

import (
	"testing"

	"github.com/tcpdispatch/tcpdispatch/internal/depcheck"
)

// TestNoHeavyDependencies keeps the SDK small: applications import it, so
// it must not pull in etcd, the HTTP framework or the logger the
// dispatcher uses.
func TestNoHeavyDependencies(t *testing.T) {
	depcheck.Forbid(t, depcheck.Heavy...)
	// The promise of the package doc: the standard library and the
	// contract package only.
	depcheck.StandardLibraryOnly(t, "github.com/tcpdispatch/tcpdispatch")
}

package tcpdispatch

import (
	"testing"

	"github.com/tcpdispatch/tcpdispatch/internal/depcheck"
)

// TestStandardLibraryOnly keeps the contract importable by the SDK and the
// kit: applications and tcp-servers must not link the dispatcher's
// dependencies through it.
func TestStandardLibraryOnly(t *testing.T) {
	depcheck.StandardLibraryOnly(t)
}

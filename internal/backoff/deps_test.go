package backoff

import (
	"testing"

	"github.com/tcpdispatch/tcpdispatch/internal/depcheck"
)

// TestStandardLibraryOnly keeps the helper importable by serverkit, whose
// promise is to depend on the standard library and the contract only.
func TestStandardLibraryOnly(t *testing.T) {
	depcheck.StandardLibraryOnly(t)
}

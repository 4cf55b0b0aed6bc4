package keyspace

import (
	"testing"

	"github.com/tcpdispatch/tcpdispatch/internal/depcheck"
)

// TestStandardLibraryOnly keeps the layout importable by tcp-servers that
// register themselves (serverkit/register) without the dispatcher's
// dependencies.
func TestStandardLibraryOnly(t *testing.T) {
	depcheck.StandardLibraryOnly(t, "github.com/tcpdispatch/tcpdispatch")
}

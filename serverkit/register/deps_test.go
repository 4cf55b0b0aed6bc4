package register

import (
	"testing"

	"github.com/tcpdispatch/tcpdispatch/internal/depcheck"
)

// TestNoDispatcherDependencies keeps push mode light: a tcp-server that
// registers itself links the etcd client and the key layout, not the
// dispatcher's store, HTTP framework, logger or metrics.
func TestNoDispatcherDependencies(t *testing.T) {
	depcheck.Forbid(t, "github.com/tcpdispatch/tcpdispatch/store", "github.com/labstack/echo",
		"github.com/sirupsen/logrus", "github.com/prometheus/", "go.etcd.io/etcd/server")
}

package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoHeavyDependencies keeps the SDK small: applications import it, so
// it must not pull in etcd, the HTTP framework or the logger the
// dispatcher uses.
func TestNoHeavyDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found:", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for _, banned := range []string{"go.etcd.io/", "github.com/labstack/echo", "github.com/sirupsen/logrus"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("client depends on %s", dep)
			}
		}
	}
}

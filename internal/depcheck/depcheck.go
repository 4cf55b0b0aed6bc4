// Package depcheck lets a test keep a package's dependency set small.
package depcheck

import (
	"os/exec"
	"strings"
	"testing"
)

// Heavy are the dispatcher's own dependencies, which packages that
// applications and tcp-servers import must not pull in.
var Heavy = []string{"go.etcd.io/", "github.com/labstack/echo", "github.com/sirupsen/logrus"}

// Forbid fails t if the package in the current directory depends, directly
// or not, on a module path starting with one of banned (go list -deps).
func Forbid(t testing.TB, banned ...string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for _, b := range banned {
			if strings.HasPrefix(dep, b) {
				t.Errorf("depends on %s", dep)
			}
		}
	}
}

// Package depcheck lets a test keep a package's dependency set small.
package depcheck

import (
	"os/exec"
	"strings"
	"testing"
)

// Heavy are the dispatcher's own dependencies, which packages that
// applications and tcp-servers import must not pull in.
var Heavy = []string{"go.etcd.io/", "github.com/labstack/echo", "github.com/sirupsen/logrus", "github.com/prometheus/"}

// StandardLibraryOnly fails t if the package in the current directory
// depends, directly or not, on anything but the standard library and
// packages of this module listed in allowed.
func StandardLibraryOnly(t testing.TB, allowed ...string) {
	t.Helper()
	self, err := exec.Command("go", "list", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	ok := map[string]bool{strings.TrimSpace(string(self)): true}
	for _, a := range allowed {
		ok[a] = true
	}
	for _, dep := range deps(t) {
		first, _, _ := strings.Cut(dep, "/")
		if strings.Contains(first, ".") && !ok[dep] {
			t.Errorf("depends on %s, outside the standard library", dep)
		}
	}
}

func deps(t testing.TB) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

// Forbid fails t if the package in the current directory depends, directly
// or not, on a module path starting with one of banned (go list -deps).
func Forbid(t testing.TB, banned ...string) {
	t.Helper()
	for _, dep := range deps(t) {
		for _, b := range banned {
			if strings.HasPrefix(dep, b) {
				t.Errorf("depends on %s", dep)
			}
		}
	}
}

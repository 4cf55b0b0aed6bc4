// Package version names the build of every tcpdispatch binary, in one
// place: a release sets it with
//
//	go build -ldflags "-X github.com/tcpdispatch/tcpdispatch/internal/version.version=v1.2.3"
//
// and any other build reports what the Go toolchain stamped into it (the
// module version, or the VCS revision and whether the tree was modified).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set by -ldflags -X; empty in an ordinary build.
var version string

// String returns the version of this build: the -ldflags value if set,
// else the module version, else "devel" with the VCS revision (shortened,
// "+dirty" for a modified tree) when the toolchain recorded one.
func String() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return "devel-" + rev
}

// Line returns the line --version prints for program: its name, version,
// Go version and platform.
func Line(program string) string {
	return fmt.Sprintf("%s %s (%s %s/%s)", program, String(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// Package integration runs real dispatcher replicas and tcp-servers as
// processes on loopback, forming real etcd clusters, and checks the
// promises of the README from outside.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(fleetEnv) != "" { // this binary as the fake fleet of TestScale
		os.Exit(runFleet())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	binDir = os.Getenv("TCPDISPATCH_BIN")
	if binDir == "" {
		dir, err := os.MkdirTemp("", "tcpdispatch-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		for _, b := range []string{"dispatcher", "tcpserver"} {
			out, err := exec.Command("go", "build", "-race", "-o", dir+"/"+b, "../cmd/"+b).CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b, err, out)
				return 1
			}
		}
		binDir = dir
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(
			// The etcd client's gRPC machinery winds down asynchronously
			// after Close.
			goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	return code
}

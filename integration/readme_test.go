package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// repoCopy copies the repository's tracked files, as they are in the
// working tree, into a new temp dir: what a fresh clone holds.
func repoCopy(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "-C", "..", "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dst := t.TempDir()
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join("..", f)
		info, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		if !info.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// readmeQuickStart returns the first ```sh block of the README's "Run it"
// section.
func readmeQuickStart(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Run it\n")
	if !ok {
		t.Fatal("README.md has no \"## Run it\" section")
	}
	m := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(sec)
	if m == nil {
		t.Fatal("README.md: no ```sh block in \"Run it\"")
	}
	return m[1]
}

// portsFree fails the test unless every loopback port is free: the
// README's examples use fixed ports.
func portsFree(t *testing.T, ports ...int) {
	t.Helper()
	eventually(t, 20*time.Second, "fixed ports free", func() error {
		for _, p := range ports {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return fmt.Errorf("port %d: %w", p, err)
			}
			l.Close()
		}
		return nil
	})
}

// script is a bash script running in its own process group, so that the
// processes it starts in the background are stopped with it.
type script struct {
	cmd *exec.Cmd
	out *os.File
	err chan error
}

func startScript(t *testing.T, dir string, args ...string) *script {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), "out.txt"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	// A file, not a pipe: Wait must not wait for the background children.
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &script{cmd: cmd, out: out, err: make(chan error, 1)}
	go func() { s.err <- cmd.Wait() }()
	t.Cleanup(func() {
		s.stopGroup(syscall.SIGTERM, 15*time.Second)
		out.Close()
	})
	return s
}

// output returns what the script printed so far.
func (s *script) output() string {
	b, _ := os.ReadFile(s.out.Name())
	return string(b)
}

// stopGroup signals the process group and waits up to d for every member
// to exit, then kills what is left.
func (s *script) stopGroup(sig syscall.Signal, d time.Duration) {
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, sig)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// TestReadmeQuickStart runs the README's quick start verbatim with bash in
// a copy of the repository (make build included) and checks that the
// curl at its end prints the answer the README shows, naming the
// registered server. Then "make demo" in the same copy must print the
// status page URL.
func TestReadmeQuickStart(t *testing.T) {
	block := readmeQuickStart(t)
	want := regexp.MustCompile(`(?m)#\s*(\{"id":"tcp1".*\})\s*$`).FindStringSubmatch(block)
	if want == nil {
		t.Fatalf("the quick start shows no answer naming tcp1 in a comment:\n%s", block)
	}
	dir := repoCopy(t)
	portsFree(t, 8080, 2379, 2380, 9000)

	s := startScript(t, dir, "bash", "-e", "-c", block)
	select {
	case err := <-s.err:
		if err != nil {
			t.Fatalf("quick start: %v\n%s", err, s.output())
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("quick start did not finish within 5 minutes:\n%s", s.output())
	}
	out := s.output()
	if !strings.Contains(out, want[1]) {
		t.Fatalf("quick start output does not show %s:\n%s", want[1], out)
	}
	s.stopGroup(syscall.SIGTERM, 15*time.Second)
	t.Logf("quick start printed %s", want[1])

	t.Run("make demo", func(t *testing.T) {
		portsFree(t, 8081, 8082, 8083, 2371, 2372, 2373, 2381, 2382, 2383, 9001, 9002, 9003, 9004, 9005, 9101, 9102, 9103, 9104, 9105)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		d := startScript(t, dir, "make", "demo")
		eventually(t, 3*time.Minute, "make demo ready", func() error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			select {
			case err := <-d.err:
				t.Fatalf("make demo exited: %v\n%s", err, d.output())
			default:
			}
			if !strings.Contains(d.output(), "Press Ctrl-C") {
				return errNotYet
			}
			return nil
		})
		out := d.output()
		if !regexp.MustCompile(`status page: +http://127\.0\.0\.1:8081/ui\b`).MatchString(out) {
			t.Errorf("make demo does not print the status page URL:\n%s", out)
		}
		// Ctrl-C, as the demo asks.
		d.stopGroup(syscall.SIGINT, 30*time.Second)
		if strings.Contains(d.output(), "WARNING: DATA RACE") {
			t.Error("data race in the demo")
		}
	})
}

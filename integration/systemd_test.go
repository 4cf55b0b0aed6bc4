package integration

import (
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySocket is a systemd-style notification socket (a unixgram socket,
// as $NOTIFY_SOCKET names it) that collects the lines it receives.
type notifySocket struct {
	path string
	conn *net.UnixConn
	msgs chan string
	done chan struct{}
}

func listenNotify(t *testing.T, dir string) *notifySocket {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &notifySocket{path: path, conn: conn, msgs: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return // closed by the cleanup
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				select {
				case s.msgs <- line:
				default: // a flood of watchdog pings; the test reads far fewer
				}
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-s.done
	})
	return s
}

// await returns the first line starting with prefix within d, and the
// lines seen before it.
func (s *notifySocket) await(prefix string, d time.Duration) (string, []string, error) {
	var seen []string
	deadline := time.After(d)
	for {
		select {
		case m := <-s.msgs:
			if strings.HasPrefix(m, prefix) {
				return m, seen, nil
			}
			seen = append(seen, m)
		case <-deadline:
			return "", seen, errNotYet
		}
	}
}

func readyz(base string) int {
	resp, err := httpClient.Get(base + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSystemdNotify runs a replica as systemd's Type=notify would: with
// $NOTIFY_SOCKET pointing at a real unixgram socket. READY=1 must not come
// while the replica has no snapshot (/readyz 503, etcd without quorum),
// must come once it has one, when /readyz already answers 200; WATCHDOG=1
// follows every third of $WATCHDOG_USEC; SIGTERM sends STOPPING=1.
func TestSystemdNotify(t *testing.T) {
	// No saved snapshot: a replica restarted alone must wait for etcd.
	c := startCluster(t, clusterOpts{replicas: 3, extra: []string{"--snapshot-file", "-", "--shutdown-delay", "500ms"}})
	c.waitServing(t)
	for _, r := range c.replicas {
		r.stop()
	}
	sock := listenNotify(t, c.dir)
	d1 := c.replicas[0]
	d1.env = []string{"NOTIFY_SOCKET=" + sock.path, "WATCHDOG_USEC=600000"}
	d1.start()

	// Alone of three members: no quorum, no snapshot, not ready.
	eventually(t, 10*time.Second, "d1 answers /healthz", func() error {
		resp, err := httpClient.Get(d1.http + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	if m, _, err := sock.await("READY=1", 3*time.Second); err == nil {
		t.Fatalf("got %q while the replica has no snapshot", m)
	}
	if code := readyz(d1.http); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d without quorum, want 503", code)
	}

	// A second member brings quorum, then a snapshot.
	c.replicas[1].start()
	if _, _, err := sock.await("READY=1", 30*time.Second); err != nil {
		t.Fatal("no READY=1 within 30s of quorum")
	}
	if code := readyz(d1.http); code != http.StatusOK {
		t.Fatalf("READY=1 arrived while /readyz answers %d", code)
	}
	if m, _, err := sock.await("STATUS=", time.Second); err != nil {
		t.Error("no STATUS= with READY=1")
	} else {
		t.Log(m)
	}
	if _, _, err := sock.await("WATCHDOG=1", 2*time.Second); err != nil {
		t.Error("no WATCHDOG=1 within 2s at WATCHDOG_USEC=600000")
	}

	d1.signal(syscall.SIGTERM)
	if _, _, err := sock.await("STOPPING=1", 5*time.Second); err != nil {
		t.Error("no STOPPING=1 within 5s of SIGTERM")
	}
	if !d1.wait(20 * time.Second) {
		t.Error("d1 did not exit within 20s of SIGTERM")
	}
	if m, seen, err := sock.await("READY=1", 100*time.Millisecond); !errors.Is(err, errNotYet) {
		t.Errorf("a second %q after %q", m, seen)
	}
}

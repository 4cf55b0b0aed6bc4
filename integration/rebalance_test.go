package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/client"
)

// The rebalancing benchmark of issue 13, with real processes on loopback:
//
//   - three dispatcher replicas (strategy least-load with accounting);
//   - five bin/tcpserver processes built on serverkit, each with its status
//     document registered, saying "GOODBYE <id>" to connections shed;
//   - a load driver in the test process holding rbClients real TCP
//     connections, each kept by the client SDK's Reconnector through the
//     replicas; a session that reads GOODBYE returns client.ErrGoodbye.
//
// One round: kill one server (SIGKILL), let the survivors absorb its
// clients, restart it, and watch max/mean conns over the five servers.
// With rebalancing on, the fleet must be back to max/mean <= 1.10 within
// 60 s of the restart, moving at most 1.3 × the minimum possible number of
// connections (the recovered server's fair share, N/5); with it off, the
// figure stays where it was (about 1.25).
//
// Settings of the run (operator keys): config/slow-start 10s,
// config/rebalance-tolerance 0.05 (the default 0.10 would stop shedding
// at exactly max/mean 1.10), config/rebalance-rate 2%/s,30%/m (the
// default 1%/s,5%/m moves 5% of the fleet per minute: a recovered fifth
// of the fleet takes four minutes by design).

const (
	rbServers    = 5
	rbWithin     = 60 * time.Second // the bound of the acceptance
	rbMaxRatio   = 1.10
	rbMaxMoved   = 1.3 // × the recovered server's fair share
	rbTolerance  = "0.05"
	rbRate       = "2%/s,30%/m"
	rbSlowStart  = "10s"
	rbGoodbyeJit = time.Second
)

// rbServer is one bin/tcpserver process with a status document.
type rbServer struct {
	*proc
	id, addr, statusURL string
}

// rbFleet is the cluster, its servers and the load driver.
type rbFleet struct {
	c       *cluster
	servers []*rbServer
	n       int // clients

	goodbyes, failures atomic.Int64 // session ends: goodbye, anything else
	connected          atomic.Int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// raiseNoFile lifts the test process's open-file limit to hold want
// descriptors (the limit children inherit, too).
func raiseNoFile(t testing.TB, want uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Max < want {
		rl.Max = want // root may raise the hard limit
	}
	rl.Cur = min(rl.Max, max(want, rl.Cur))
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatalf("raise RLIMIT_NOFILE to %d: %v (run as root or raise ulimit -n)", want, err)
	}
}

func startRBFleet(t testing.TB, clients int) *rbFleet {
	t.Helper()
	raiseNoFile(t, uint64(clients)+8192)
	c := startCluster(t, clusterOpts{replicas: 3, extra: loadFlags})
	f := &rbFleet{c: c, n: clients}
	c.put(t, "config/strategy", "least-load")
	c.put(t, "config/assignment-accounting", "true")
	c.put(t, "config/slow-start", rbSlowStart)
	c.put(t, "config/rebalance-tolerance", rbTolerance)
	c.put(t, "config/rebalance-rate", rbRate)
	for i := range rbServers {
		ports := freePorts(t, 2)
		s := &rbServer{id: fmt.Sprintf("r%d", i+1), addr: fmt.Sprintf("127.0.0.1:%d", ports[0])}
		status := fmt.Sprintf("127.0.0.1:%d", ports[1])
		s.statusURL = "http://" + status + "/status"
		s.proc = newProc(t, c.dir, s.id, "tcpserver", "--listen", s.addr, "--id", s.id, "--status-listen", status,
			"--idle-timeout", "1h", "--drain-window", "1s")
		f.servers = append(f.servers, s)
		s.start()
		f.waitAccepting(t, s)
		c.put(t, "servers/"+s.id+"/addr", s.addr)
		c.put(t, "servers/"+s.id+"/status-url", s.statusURL)
	}
	c.waitView(t, 30*time.Second, "all servers eligible with reports", func(v map[string]lbView) error {
		for _, s := range f.servers {
			if sv := v[s.id]; !sv.Eligible || sv.Report != "fresh" {
				return fmt.Errorf("%s: eligible %v report %q", s.id, sv.Eligible, sv.Report)
			}
		}
		return nil
	})
	f.startDriver(t)
	return f
}

func (f *rbFleet) waitAccepting(t testing.TB, s *rbServer) {
	t.Helper()
	eventually(t, 20*time.Second, s.id+" serving status", func() error {
		_, _, err := s.doc()
		return err
	})
}

// doc reads the server's status document (without ?shed: reading it sheds
// nothing).
func (s *rbServer) doc() (conns, shedTotal int64, err error) {
	var d struct {
		Conns     int64 `json:"conns"`
		ShedTotal int64 `json:"shed_total"`
	}
	err = getJSON(s.statusURL, &d)
	return d.Conns, d.ShedTotal, err
}

// startDriver starts the f.n clients, spread over a few seconds.
func (f *rbFleet) startDriver(t testing.TB) {
	t.Helper()
	var boot []string
	for _, r := range f.c.replicas {
		boot = append(boot, strings.TrimPrefix(r.http, "http://"))
	}
	cl, err := client.New(client.Config{Bootstrap: boot, RequestTimeout: 2 * time.Second, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := client.NewReconnector(cl, client.ReconnectConfig{BackoffBase: 500 * time.Millisecond, BackoffCap: 5 * time.Second,
		MinDelay: 20 * time.Millisecond, ResetAfter: 10 * time.Second, GoodbyeJitter: rbGoodbyeJit})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	t.Cleanup(f.stopDriver)
	spread := time.Duration(f.n) * time.Millisecond / 2 // 2,000 connects a second
	start := time.Now()
	for i := range f.n {
		f.wg.Go(func() {
			select {
			case <-time.After(time.Until(start.Add(spread * time.Duration(i) / time.Duration(f.n)))):
			case <-ctx.Done():
				return
			}
			_ = rc.Run(ctx, f.session)
		})
	}
	f.waitSettled(t, 60*time.Second, rbServers)
}

func (f *rbFleet) stopDriver() {
	if f.cancel != nil {
		f.cancel()
		f.wg.Wait()
		f.cancel = nil
	}
}

// session holds one connection until the server closes it or says
// goodbye.
func (f *rbFleet) session(_ context.Context, conn net.Conn, ans client.Answer) error {
	f.connected.Add(1)
	defer f.connected.Add(-1)
	err := holdUntilGoodbye(conn)
	if errors.Is(err, client.ErrGoodbye) {
		f.goodbyes.Add(1)
	} else {
		f.failures.Add(1)
	}
	return err
}

// holdUntilGoodbye reads conn until bin/tcpserver's goodbye line, which it
// returns as client.ErrGoodbye, or until a read fails.
func holdUntilGoodbye(conn net.Conn) error {
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, "GOODBYE ") {
			return fmt.Errorf("%s: %w", strings.TrimSpace(line), client.ErrGoodbye)
		}
	}
}

// view reads every live server's conns: the counts, their sum, max/mean
// over the servers counted (live ones, a dead one counting 0 when all is
// true) and the total of shed_total.
func (f *rbFleet) view(all bool) (counts []int64, sum int64, ratio float64) {
	var mx int64
	n := 0
	for _, s := range f.servers {
		conns, _, err := s.doc()
		if err != nil {
			conns = 0
			if !all {
				counts = append(counts, -1)
				continue
			}
		}
		n++
		counts = append(counts, conns)
		sum += conns
		mx = max(mx, conns)
	}
	if sum == 0 {
		return counts, 0, 0
	}
	return counts, sum, float64(mx) / (float64(sum) / float64(n))
}

// waitSettled waits until the n servers reachable hold every client.
func (f *rbFleet) waitSettled(t testing.TB, d time.Duration, n int) {
	t.Helper()
	eventually(t, d, fmt.Sprintf("%d clients connected to %d servers", f.n, n), func() error {
		counts, sum, _ := f.view(false)
		live := 0
		for _, c := range counts {
			if c >= 0 {
				live++
			}
		}
		if live != n || sum != int64(f.n) || f.connected.Load() != int64(f.n) {
			return fmt.Errorf("conns %v (sum %d), %d sessions", counts, sum, f.connected.Load())
		}
		return nil
	})
}

// setRebalance sets config/rebalance and waits until every replica shows it.
func (f *rbFleet) setRebalance(t testing.TB, mode string) {
	t.Helper()
	f.c.put(t, "config/rebalance", mode)
	eventually(t, 10*time.Second, "rebalance "+mode, func() error {
		for _, r := range f.c.replicas {
			var v struct {
				Balancing struct {
					Rebalance string `json:"rebalance"`
				} `json:"balancing"`
			}
			if err := getJSON(r.http+"/v1/servers", &v); err != nil {
				return err
			}
			if v.Balancing.Rebalance != mode {
				return fmt.Errorf("%s: rebalance %q", r.name, v.Balancing.Rebalance)
			}
		}
		return nil
	})
}

// rbResult is one round's figures.
type rbResult struct {
	absorbed   float64       // max/mean of the four survivors once they hold every client
	reached    time.Duration // from the restart to max/mean <= 1.10 (on), or -1
	final      float64       // max/mean over five at the end
	moved      int64         // connections shed (goodbyes read by clients)
	minMoves   int64         // the recovered server's fair share
	failures   int64         // session ends other than goodbyes, the kill's included
	counts     []int64
	observedOn time.Duration
}

// round kills the last server, lets the survivors absorb its clients,
// restarts it and watches for observe (with rebalancing on: until max/mean
// <= 1.10 and shedding stopped, at most rbWithin).
func (f *rbFleet) round(t testing.TB, on bool, observe time.Duration) rbResult {
	t.Helper()
	mode := "off"
	if on {
		mode = "on"
	}
	f.setRebalance(t, mode)
	f.waitSettled(t, 60*time.Second, rbServers)
	victim := f.servers[rbServers-1]
	failures0 := f.failures.Load()

	victim.kill()
	f.waitSettled(t, 60*time.Second, rbServers-1)
	_, _, absorbed := f.view(false)
	goodbyes0 := f.goodbyes.Load()

	victim.start()
	restart := time.Now()
	f.waitAccepting(t, victim)
	res := rbResult{absorbed: absorbed, reached: -1, minMoves: int64(f.n / rbServers)}
	deadline := restart.Add(max(observe, rbWithin))
	lastMoved, quietSince := int64(-1), time.Now()
	for time.Now().Before(deadline) {
		counts, sum, ratio := f.view(true)
		moved := f.goodbyes.Load() - goodbyes0
		if moved != lastMoved {
			lastMoved, quietSince = moved, time.Now()
		}
		if on && res.reached < 0 && sum == int64(f.n) && ratio <= rbMaxRatio {
			res.reached = time.Since(restart)
			t.Logf("rebalance on: max/mean %.3f after %v, %d moved so far; conns %v", ratio, res.reached.Round(100*time.Millisecond), moved, counts)
		}
		// On: done once balanced and nothing was shed for 5s.
		if on && res.reached >= 0 && time.Since(quietSince) >= 5*time.Second {
			break
		}
		if !on && time.Since(restart) >= observe {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	res.observedOn = time.Since(restart)
	f.waitSettled(t, 30*time.Second, rbServers)
	res.counts, _, res.final = f.view(true)
	res.moved = f.goodbyes.Load() - goodbyes0
	res.failures = f.failures.Load() - failures0
	t.Logf("rebalance %s: survivors absorbed at max/mean %.3f; after the restart: max/mean %.3f after %v, moved %d (minimum %d, ratio %.2f), conns %v, other session ends %d",
		mode, res.absorbed, res.final, res.observedOn.Round(100*time.Millisecond), res.moved, res.minMoves,
		float64(res.moved)/float64(res.minMoves), res.counts, res.failures)
	return res
}

// checkRound asserts the acceptance bounds of issue 13 on a round.
func checkRound(t testing.TB, on bool, r rbResult) {
	t.Helper()
	if on {
		if r.reached < 0 || r.reached > rbWithin {
			t.Errorf("rebalance on: max/mean not <= %.2f within %v of the restart (final %.3f, conns %v)", rbMaxRatio, rbWithin, r.final, r.counts)
		}
		if r.final > rbMaxRatio {
			t.Errorf("rebalance on: final max/mean %.3f > %.2f", r.final, rbMaxRatio)
		}
		if float64(r.moved) > rbMaxMoved*float64(r.minMoves) {
			t.Errorf("rebalance on: moved %d connections; want at most %.1f × %d", r.moved, rbMaxMoved, r.minMoves)
		}
		return
	}
	if r.moved != 0 {
		t.Errorf("rebalance off: %d connections were shed", r.moved)
	}
	// The recovered server gets nobody back: the figure stays where the
	// absorption left it (4 survivors at N/4 over a mean of N/5: 1.25).
	if r.final < 1.2 {
		t.Errorf("rebalance off: max/mean %.3f after the restart; want it to stay near 1.25", r.final)
	}
}

// TestRebalanceShort is the short version of BenchmarkRebalance, in make
// test: 1,000 clients, rebalancing on then off (observed 10 s).
func TestRebalanceShort(t *testing.T) {
	f := startRBFleet(t, 1000)
	on := f.round(t, true, 0)
	checkRound(t, true, on)
	off := f.round(t, false, 10*time.Second)
	checkRound(t, false, off)
}

// BenchmarkRebalance runs the rebalancing benchmark with 10,000 clients
// (see the top of this file) and reports, with rebalancing on, the seconds
// to max/mean <= 1.10 after the restart, the final max/mean and the moved
// connections over their minimum; with it off (observed 30 s), the final
// max/mean. Run with -benchtime 1x.
func BenchmarkRebalance(b *testing.B) {
	f := startRBFleet(b, 10000)
	for b.Loop() {
		on := f.round(b, true, 0)
		checkRound(b, true, on)
		off := f.round(b, false, 30*time.Second)
		checkRound(b, false, off)
		b.ReportMetric(on.reached.Seconds(), "on-seconds-to-1.10")
		b.ReportMetric(on.final, "on-max/mean")
		b.ReportMetric(float64(on.moved)/float64(on.minMoves), "on-moved/minimum")
		b.ReportMetric(off.final, "off-max/mean")
	}
}

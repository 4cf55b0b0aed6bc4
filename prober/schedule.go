package prober

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/election"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// Scheduling (issue 11). Every server has its own phase within the
// interval, derived from its id, and is probed once per interval at that
// phase: probes are spread evenly over the interval instead of run in
// rounds that wait for their slowest member, so a server that times out
// delays nobody else. Results come back as they complete; Run judges them
// in small batches (at most every batchGap) and writes a changed verdict at
// once. A "round" is now one interval of the term: the unit in which load
// reports are batched, rebalancing is planned, the self-fault checks count
// and the heartbeat is written.

// batchGap is the shortest time between two passes over completed results:
// what a verdict may wait to be judged and written, traded against the work
// of a pass.
const batchGap = 5 * time.Millisecond

// flushTxns is the most transactions one pass writes; the rest waits for
// the next pass.
const flushTxns = 2 * flushParallel

// noticeGather is the longest a death notice's result waits for others:
// the links of servers that die together (a rack, a deploy gone wrong)
// close within milliseconds of one another, and judging them in one batch
// lets the suspect check see them together and writes them in one
// transaction, so that replicas' mass-removal guard sees one update, as it
// did when a round's verdicts were written together. The wait ends sooner,
// noticeQuiet after the last notice's result, once no notice probe is in
// flight: a lone death is judged about noticeQuiet after its notice.
const (
	noticeGather = 30 * time.Millisecond
	noticeQuiet  = 8 * time.Millisecond
)

// entry is one server's place in the schedule. Only Run's goroutine uses it.
type entry struct {
	id, addr, statusURL string
	due                 time.Time // next probe
	index               int       // in the heap; -1 when not queued
	busy                bool      // a probe is in flight
	deferred            bool      // due, waiting for room
	gen                 uint64    // bumped when addr or statusURL change
	// written is when this term last wrote the record; zero: not yet.
	written time.Time
	link    *link // the persistent connection, nil without one
	// linkFails counts links the server closed although it stayed up;
	// linkAfter is when the next link may be tried.
	linkFails int
	linkAfter time.Time
	// closesLinks is set when a link ended within an interval while the
	// server stayed up (its notice probe connected): the end of its next
	// young link says nothing, and sends no notice probe. A link that
	// holds an interval clears it.
	closesLinks bool
	// dialedAt is when its last connect probe started; probedOK is set
	// while its last probe (connect, and status pull when it has a status
	// URL) worked: only then may something else vouch for it (see
	// Config.Recheck).
	dialedAt time.Time
	probedOK bool
	// first marks a server with no verdict yet, probed early (within a
	// quarter interval of its registration) and then moved to its phase.
	first bool
	// synced is the number of the last sync that found the server in the
	// snapshot; an entry left behind was removed.
	synced uint64
}

// schedule is a min-heap of entries by due time.
type schedule []*entry

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(i, j int) bool { return s[i].due.Before(s[j].due) }
func (s schedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}
func (s *schedule) Push(x any) {
	e := x.(*entry)
	e.index = len(*s)
	*s = append(*s, e)
}
func (s *schedule) Pop() any {
	old := *s
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*s = old[:len(old)-1]
	return e
}

// phase returns id's offset within the interval: stable across terms and
// replicas, spread evenly over the fleet.
func phase(id string, interval time.Duration) time.Duration {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return time.Duration(h.Sum64() % uint64(interval))
}

// phaseDue is id's first turn after now at its phase of the interval.
func phaseDue(id string, now time.Time, interval time.Duration) time.Time {
	due := now.Truncate(interval).Add(phase(id, interval))
	if !due.After(now) {
		due = due.Add(interval)
	}
	return due
}

// result is one completed probe.
type result struct {
	target
	gen uint64
}

// term is the state of one Run: one leadership term.
type term struct {
	p   *Prober
	w   Writer
	log *logrus.Entry

	trackers map[string]*tracker
	loads    map[string]*loadTracker
	entries  map[string]*entry
	queue    schedule
	sheds    map[string]int64 // this round's rebalancing asks
	pending  map[string]store.Health
	// urgent is set when pending holds a verdict change: it is written in
	// this pass, not at the end of the round.
	urgent bool
	// flushAfter delays writes after a failed one.
	flushAfter time.Time
	// writing is set while a flush's transactions are in flight, on their
	// own goroutine so that probing and judging go on meanwhile; wrote
	// brings back their outcome. One flush at a time: a newer record of a
	// server is written after the one in flight.
	writing bool
	wrote   chan flushed
	// beatOwed: the round ended with every check passed but records still
	// being written; the heartbeat follows once they are.
	beatOwed bool
	// noticeAt is when a death notice's result was first seen, noticeLast
	// when the last one was; results are held until noticeGather after the
	// first, or noticeQuiet after the last once every notice probe is back
	// (noticeOut started, noticesSeen of them done at the last pass).
	noticeAt, noticeLast time.Time
	noticeOut            int
	noticesSeen          int
	// exhaustedAt is when a socket last failed for want of descriptors.
	exhaustedAt time.Time
	// distrustUntil: until then no link vouches for its server. An up
	// server that went silent (a probe or a link timed out) may mean
	// this leader's own path to the fleet is lost, which an open link
	// does not show until its keepalive fails (up to two seconds): for
	// the next interval every server is probed for real, so that a
	// leader cut off sees its probes fail at once and asks other
	// replicas (judge) instead of taking servers down one by one.
	distrustUntil time.Time
	snap          *store.Snapshot // the last snapshot synced
	syncs         uint64          // syncs made, numbering them
	rb            *rebalancer
	token         string
	faults        int // consecutive rounds with a self-fault
	round         roundStats
	inflight      int
	capacity      int
	linkCount     int // links open or opening
	// statusServers counts the servers with a status URL: each holds a
	// kept-alive connection.
	statusServers int
	// linkable holds, during a pass, the servers whose good probe may
	// open their link.
	linkable []*entry

	// links is closed-link notices from persistent connections.
	links chan linkEvent
	// poller watches the open links; nil when links are off or it could
	// not be created.
	poller *linkPoller
	// conn runs connect probes (connect.go); nil when it could not be
	// created, and every probe then dials on a goroutine.
	conn *connector

	mu   sync.Mutex // guards done and doneNotices
	done []result
	// doneNotices counts the notice probes' results in done.
	doneNotices int
	ready       chan struct{} // signalled when done grows
	probes      sync.WaitGroup
	nofile      int // the open-file limit, for the capacity bound
	lastBeat    time.Time
	// beating is set while a heartbeat write is in flight on its own
	// goroutine; beaten brings back its outcome (see beat).
	beating bool
	beaten  chan beatOutcome
}

// roundStats are one round's counts for the self-fault checks and the
// heartbeat.
type roundStats struct {
	probes, local int
	fault         string // the first self-fault found by judge
	held          bool   // some verdict was held back
	exhausted     bool   // a socket could not be opened: out of descriptors
	deferred      int    // probes started late for want of room
}

// Run probes until ctx (the leadership context) is cancelled, writing
// through w. It returns nil on cancellation, election.ErrNotLeader when a
// write finds leadership lost, and ErrSelfFault (see judge); other etcd
// errors are logged and the unwritten records retried. Every probe and
// persistent connection it started has ended when it returns.
func (p *Prober) Run(ctx context.Context, w Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	t := &term{p: p, w: w, log: p.log.WithField("epoch", w.Epoch()),
		trackers: make(map[string]*tracker), loads: make(map[string]*loadTracker),
		entries: make(map[string]*entry), sheds: make(map[string]int64),
		pending: make(map[string]store.Health), rb: newRebalancer(),
		ready: make(chan struct{}, 1), links: make(chan linkEvent, 64), wrote: make(chan flushed, 1),
		beaten: make(chan beatOutcome, 1), nofile: openFileLimit()}
	var err error
	if !p.cfg.DisableLinks {
		if t.poller, err = newLinkPoller(t.links); err != nil {
			t.log.WithError(err).Warn("no persistent connections this term")
		} else {
			t.probes.Go(func() { t.poller.run(ctx) })
		}
	}
	if t.conn, err = newConnector(p.dialer.Control); err != nil {
		t.log.WithError(err).Warn("connect probes on goroutines this term")
		t.conn = nil
	} else {
		t.probes.Go(func() { t.conn.run(ctx) })
	}
	defer func() {
		cancel()
		t.closeLinks()
		t.probes.Wait()
		p.http.closeIdle()
		p.metrics.links.Set(0)
		p.metrics.capacity.Set(0)
	}()
	return t.run(ctx)
}

func (t *term) run(ctx context.Context) error {
	p := t.p
	// Jitter the first round's end so that replicas that win in turn after
	// a flapping etcd do not beat in lockstep.
	now := time.Now()
	roundEnd := now.Add(p.cfg.Interval + time.Duration(rand.Int64N(max(1, int64(p.cfg.Interval)/4))))
	seeded := false
	timer := time.NewTimer(0)
	defer timer.Stop()
	gap := time.NewTimer(time.Hour)
	gap.Stop()
	defer gap.Stop()
	var wake time.Time      // when the timer was set to fire
	var idleSince time.Time // when the loop last started waiting
	lastPass := time.Time{}
	// A new snapshot wakes the loop: servers just registered are probed
	// within a quarter interval, not after the next wake-up (up to an
	// interval later while nothing else is due).
	notifier, _ := p.snaps.(changeNotifier)
	var changed <-chan struct{}
	coalesce := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-changed:
			coalesce = true
		case <-t.ready:
			coalesce = true
		case ev := <-t.links:
			t.linkClosed(ctx, ev)
		case f := <-t.wrote:
			if err := t.written(ctx, f, time.Now()); err != nil {
				return err
			}
		case b := <-t.beaten:
			if err := t.beatDone(ctx, b); err != nil {
				return err
			}
		}
		if coalesce {
			// Results arriving close together, and the snapshots of a
			// registering fleet, are taken in one pass. A death notice's
			// result ends the wait (its gathering has a clock of its own,
			// see noticeGather), and links that end meanwhile get their
			// notice probes at once.
			coalesce = false
			if err := t.gather(ctx, gap, lastPass.Add(batchGap)); err != nil || ctx.Err() != nil {
				return err
			}
		}
		now = time.Now()
		lastPass = now
		// How late the timer fired while this loop was idle waiting for
		// it: scheduling lag of a starved process. (Time the loop itself
		// spent past wake, writing or judging, is not starvation: the
		// probes it starts late still get their whole timeout.)
		var schedLag time.Duration
		if !wake.IsZero() && now.After(wake) && idleSince.Before(wake) {
			schedLag = now.Sub(wake)
			p.metrics.lag.Observe(schedLag.Seconds())
		}
		if notifier != nil {
			// Taken before the snapshot is read: a newer one closes it.
			changed = notifier.Changed()
		}
		snap := p.snaps.Snapshot()
		if snap == nil {
			wake = now.Add(p.cfg.Interval)
			timer.Reset(p.cfg.Interval)
			continue
		}
		if t.token == "" && p.peers != nil {
			var err error
			if t.token, err = p.writeToken(ctx, t.w); errors.Is(err, election.ErrNotLeader) {
				return err
			} else if err != nil && ctx.Err() == nil {
				t.log.WithError(err).Warn("write opinion token; retrying next round")
			}
		}
		if !seeded {
			p.seed(snap, t.trackers, t.loads)
			seeded = true
		}
		if snap != t.snap {
			t.sync(snap, now)
		}
		if err := t.pass(ctx, now); err != nil {
			return err
		}
		t.dispatch(ctx, now, schedLag)
		if !now.Before(roundEnd) {
			if err := t.endRound(ctx, now); err != nil || ctx.Err() != nil {
				return err
			}
			roundEnd = roundEnd.Add(p.cfg.Interval)
			if roundEnd.Before(now) {
				roundEnd = now.Add(p.cfg.Interval)
			}
		}
		next := roundEnd
		if len(t.queue) > 0 && t.queue[0].due.Before(next) {
			next = t.queue[0].due
		}
		if !t.noticeAt.IsZero() {
			at := t.noticeAt.Add(noticeGather)
			if quiet := t.noticeLast.Add(noticeQuiet); quiet.Before(at) {
				at = quiet
			}
			if at.Before(next) {
				next = at
			}
		}
		if t.inflight >= t.capacity && next.Before(now.Add(10*time.Millisecond)) {
			// No room: wait for results to free some, or a little.
			next = now.Add(10 * time.Millisecond)
		}
		wake = next
		idleSince = time.Now()
		timer.Reset(max(0, time.Until(next)))
	}
}

// sync brings the schedule in line with snap: new servers are queued at
// their phase, removed ones forgotten, a changed addr starts without a
// verdict.
func (t *term) sync(snap *store.Snapshot, now time.Time) {
	t.snap = snap
	// Entries found are marked with this sync's number, not collected in
	// a set: a sync runs on every new snapshot, and a map of every server
	// each time was most of the leader's garbage while a fleet registers.
	t.syncs++
	t.statusServers = 0
	for i := range snap.Servers {
		s := snap.Servers[i]
		if s.Addr == "" {
			continue
		}
		if s.StatusURL != "" {
			t.statusServers++
		}
		e := t.entries[s.ID]
		if e == nil {
			e = &entry{id: s.ID, addr: s.Addr, statusURL: s.StatusURL, index: -1}
			t.entries[s.ID] = e
			if tr := t.trackers[s.ID]; tr == nil || tr.addr != s.Addr || tr.status == statusUnknown {
				// No verdict to serve on: the first probe comes early,
				// spread over a quarter interval so that a fleet
				// registered at once is not dialed in one burst.
				e.due, e.first = now.Add(phase(s.ID, t.p.cfg.Interval/4)), true
			} else {
				e.due = phaseDue(s.ID, now, t.p.cfg.Interval)
			}
			heap.Push(&t.queue, e)
		}
		if e.addr != s.Addr || e.statusURL != s.StatusURL {
			e.addr, e.statusURL = s.Addr, s.StatusURL
			e.gen++
			t.closeLink(e)
			e.linkFails, e.linkAfter, e.closesLinks = 0, time.Time{}, false
		}
		tr := t.trackers[s.ID]
		if tr == nil || tr.addr != s.Addr {
			// A new address starts without a verdict: the old one's
			// says nothing about it.
			t.trackers[s.ID] = &tracker{addr: s.Addr}
			delete(t.loads, s.ID)
		}
		e.synced = t.syncs
	}
	for id, e := range t.entries {
		if e.synced == t.syncs {
			continue
		}
		if e.index >= 0 {
			heap.Remove(&t.queue, e.index)
		}
		t.closeLink(e)
		e.gen++
		delete(t.entries, id)
		delete(t.trackers, id)
		delete(t.loads, id)
		delete(t.pending, id)
		delete(t.sheds, id)
	}
	// Room for every server to be timing out at once, with half again
	// for phases that bunch up, within the bounds.
	n := len(t.entries)
	need := t.p.cfg.Concurrency + int((3*int64(n)*int64(t.p.cfg.Timeout)+2*int64(t.p.cfg.Interval)-1)/(2*int64(t.p.cfg.Interval)))
	t.capacity = min(need, t.p.cfg.MaxInFlight)
	if t.nofile > 0 {
		t.capacity = min(t.capacity, max(t.p.cfg.Concurrency, t.nofile/2))
	}
	t.p.metrics.capacity.Set(float64(t.capacity))
	if len(snap.OrphanHealth()) > 0 {
		t.urgent = true
	}
}

// dispatch starts the probes that are due, as room allows. schedLag is how
// late this pass started for want of CPU: a probe's timeout then says
// nothing about the server (see classifier), nor does one of a probe
// started late for want of room.
func (t *term) dispatch(ctx context.Context, now time.Time, schedLag time.Duration) {
	interval := t.p.cfg.Interval
	for len(t.queue) > 0 && !t.queue[0].due.After(now) {
		e := t.queue[0]
		if e.busy {
			// Its last probe has not returned (the process is starved:
			// probes end within Timeout < Interval): skip this turn.
			e.due = e.due.Add(interval)
			heap.Fix(&t.queue, 0)
			continue
		}
		if t.inflight >= t.capacity {
			if !e.deferred {
				e.deferred = true
				t.round.deferred++
				t.p.metrics.deferred.Inc()
			}
			return
		}
		lag := schedLag
		if e.deferred {
			lag = max(lag, now.Sub(e.due))
		}
		e.deferred = false
		e.due = e.due.Add(interval)
		if !e.due.After(now) {
			// More than an interval late: keep the phase, skip the turns
			// missed.
			e.due = e.due.Add((now.Sub(e.due)/interval + 1) * interval)
		}
		if e.first {
			// From now on at its phase, spread over the interval.
			e.first = false
			e.due = phaseDue(e.id, now, interval)
		}
		heap.Fix(&t.queue, 0)
		tg := target{id: e.id, addr: e.addr, statusURL: e.statusURL, shed: t.sheds[e.id]}
		delete(t.sheds, e.id)
		e.busy = true
		t.inflight++
		gen := e.gen
		if recheck := now.Sub(e.dialedAt) >= t.p.cfg.Recheck; !recheck && e.probedOK && e.statusURL == "" && e.link != nil && e.link.open.Load() && now.After(t.distrustUntil) {
			// The open link vouches for the server this interval.
			tg.ok, tg.vouched = true, true
			t.p.metrics.vouched.Inc()
			t.complete(result{target: tg, gen: gen})
			continue
		} else if !recheck && e.probedOK && e.statusURL != "" {
			tg.noDial = true
		} else {
			e.dialedAt = now
		}
		t.startProbe(ctx, tg, gen, lag)
	}
}

// connectable reports whether addr goes through the connector: an IP
// literal without a zone, while the term has one.
func (t *term) connectable(addr string) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(addr)
	return ap, err == nil && ap.Addr().Zone() == "" && t.conn != nil
}

// startProbe runs tg's probe and hands its result to Run. A connect to an
// IP literal goes through the connector (no goroutine while it waits); a
// status pull, and a connect to a host name, run on a goroutine.
func (t *term) startProbe(ctx context.Context, tg target, gen uint64, lag time.Duration) {
	if !tg.noDial || tg.statusURL == "" {
		if ap, ok := t.connectable(tg.addr); ok {
			t.conn.start(ap, t.p.cfg.Timeout, func(err error, elapsed time.Duration) {
				t.p.dialed(&tg, err, elapsed, lag)
				if !tg.ok || tg.statusURL == "" {
					t.complete(result{target: tg, gen: gen})
					return
				}
				t.probes.Go(func() {
					t.p.pull(ctx, &tg, lag)
					t.complete(result{target: tg, gen: gen})
				})
			})
			return
		}
	}
	t.probes.Go(func() {
		t.p.probeOne(ctx, &tg, lag)
		t.complete(result{target: tg, gen: gen})
	})
}

// gather waits until the time until for more results to take in one
// pass, on the stopped timer gap. Links that end meanwhile are taken in
// (their notice probes start at once), and a notice probe's result not
// yet seen by a pass ends the wait. It returns an error only for a write outcome that
// found leadership lost; ctx's end returns nil (the caller checks ctx).
func (t *term) gather(ctx context.Context, gap *time.Timer, until time.Time) error {
	defer gap.Stop()
	for {
		d := time.Until(until)
		if d <= 0 || t.noticeUnseen() {
			return nil
		}
		gap.Reset(d)
		select {
		case <-ctx.Done():
			return nil
		case <-gap.C:
			return nil
		case <-t.ready:
		case ev := <-t.links:
			t.linkClosed(ctx, ev)
		case b := <-t.beaten:
			if err := t.beatDone(ctx, b); err != nil {
				return err
			}
		}
		gap.Stop()
	}
}

// noticeUnseen reports whether a notice probe's result is waiting that no
// pass has seen yet.
func (t *term) noticeUnseen() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.doneNotices > t.noticesSeen
}

// complete hands a probe's result to Run.
func (t *term) complete(r result) {
	t.mu.Lock()
	t.done = append(t.done, r)
	if r.notice {
		t.doneNotices++
	}
	t.mu.Unlock()
	select {
	case t.ready <- struct{}{}:
	default:
	}
}

// pass judges the completed results and writes what changed.
func (t *term) pass(ctx context.Context, now time.Time) error {
	t.mu.Lock()
	done, notices := t.done, t.doneNotices
	if notices > 0 {
		if t.noticeAt.IsZero() {
			t.noticeAt = now
		}
		if notices > t.noticesSeen {
			t.noticeLast, t.noticesSeen = now, notices
		}
		if now.Sub(t.noticeAt) < noticeGather && (t.noticeOut > notices || now.Sub(t.noticeLast) < noticeQuiet) {
			// Let the notices of servers dying together gather.
			t.mu.Unlock()
			return nil
		}
	}
	t.noticeAt, t.noticeLast, t.noticesSeen = time.Time{}, time.Time{}, 0
	t.noticeOut -= notices
	t.done, t.doneNotices = nil, 0
	t.mu.Unlock()
	batch := make([]target, 0, len(done))
	for _, r := range done {
		e := t.entries[r.id]
		t.inflight--
		if e != nil && !r.notice {
			// One regular probe per server is in flight at a time,
			// whatever addr it probed.
			e.busy = false
		}
		if e == nil || r.gen != e.gen {
			continue // removed or re-addressed meanwhile
		}
		switch {
		case r.notice && r.ok && r.youngLink:
			e.closesLinks = true
		case r.notice && r.refused:
			// The link ended with its server's death: not a link it
			// closed while staying up, which would count against its
			// next one (linkMaxFails).
			e.linkFails, e.linkAfter = 0, time.Time{}
		}
		if !r.notice && !r.vouched {
			e.probedOK = r.ok
		}
		if r.local && !r.notice && e.index >= 0 {
			// A probe that says nothing about the server (this host's
			// fault, starved) leaves a server with no verdict yet
			// unserved: try again soon, not in an interval.
			if tr := t.trackers[r.id]; (tr == nil || tr.status == statusUnknown) && now.Add(t.p.cfg.Interval/8).Before(e.due) {
				e.due = now.Add(t.p.cfg.Interval / 8)
				heap.Fix(&t.queue, e.index)
			}
		}
		if !r.ok && (r.timedOut || r.linkLost) {
			if tr := t.trackers[r.id]; tr != nil && tr.status == statusUp {
				t.distrustUntil = now.Add(t.p.cfg.Interval)
			}
		}
		batch = append(batch, r.target)
		if r.ok && !r.local && e.link == nil && e.statusURL == "" && !t.p.cfg.DisableLinks && !now.Before(e.linkAfter) {
			t.linkable = append(t.linkable, e)
		}
	}
	if len(batch) > 0 {
		t.apply(ctx, batch, now)
	}
	if t.urgent && !now.Before(t.flushAfter) {
		t.flush(ctx, now)
	}
	// A link opens at a server's first good probe, once its record is
	// written or being written (a server killed a second after it came
	// up dies by a notice too), and after this pass's flush has started:
	// a term's first records (every server at once when it starts or a
	// fleet registers) are not held up by as many dials.
	for _, e := range t.linkable {
		if !e.written.IsZero() && e.link == nil {
			t.openLink(ctx, e)
		}
	}
	clear(t.linkable)
	t.linkable = t.linkable[:0]
	return nil
}

// apply judges one batch of results and records the verdicts to write.
func (t *term) apply(ctx context.Context, batch []target, now time.Time) {
	p := t.p
	fault, extra := p.judge(ctx, batch, t.trackers, t.token)
	if fault != "" && t.round.fault == "" {
		t.round.fault = fault
	}
	batch = append(batch, extra...)
	snap := t.snap
	var none loadTracker // stands in for the tracker a server does not keep
	for i := range batch {
		tg := &batch[i]
		if !tg.confirmed {
			t.round.probes++
		}
		if tg.local {
			t.round.local++
		}
		t.round.exhausted = t.round.exhausted || tg.exhausted
		if tg.skip {
			if !tg.local {
				t.round.held = true
				if tr := t.trackers[tg.id]; tr != nil && tr.status == statusUp && !tg.ok {
					// Held, not forgotten: it still counts as failing
					// when the next batch is judged.
					tr.held = true
				}
			}
			// Not a verdict: the record stays as it is.
			continue
		}
		if tg.notice && tg.ok {
			// A notice probe confirms a death or finds none; it does not
			// vouch for the server (its status pull may still fail).
			continue
		}
		tr := t.trackers[tg.id]
		e := t.entries[tg.id]
		if tr == nil || e == nil {
			continue
		}
		var changed bool
		if tg.linkLost && tr.status == statusUp && !tg.ok {
			// The link's keepalive went unanswered: one failure, then
			// the notice probe's result.
			tr.observe(false, "persistent connection timed out", now, p.cfg.Rise, p.cfg.Fall)
		}
		if tg.notice && tg.refused || tg.confirmed {
			changed = tr.down(tg.reason, now)
			if changed && tg.notice {
				p.metrics.deathNotices.Inc()
			}
		} else {
			changed = tr.observe(tg.ok, tg.reason, now, p.cfg.Rise, p.cfg.Fall)
		}
		if changed {
			p.metrics.transitions.Inc()
			t.log.WithFields(logrus.Fields{"server": tg.id, "addr": tg.addr, "up": tr.status == statusUp, "reason": tg.reason}).Info("server health changed")
		}
		// Only servers with a status URL, or a report in etcd, keep a
		// load tracker; for the others it would stay empty.
		lt := t.loads[tg.id]
		if lt == nil && tg.statusURL != "" {
			lt = &loadTracker{}
			t.loads[tg.id] = lt
		} else if lt == nil {
			none = loadTracker{}
			lt = &none
		}
		if tg.statusURL != "" || lt.has || lt.written {
			lt.observe(tg.status, now, p.cfg.LoadSmoothing, snap.Balancing.OverloadThreshold, snap.Balancing.OverloadRecover)
		}
		if lt.overloaded != lt.wOverloaded && lt.has {
			t.log.WithFields(logrus.Fields{"server": tg.id, "overloaded": lt.overloaded, "load": lt.last.Utilization()}).Info("server overload changed")
		}
		refresh := p.cfg.RefreshInterval > 0 && now.Sub(e.written) >= p.cfg.RefreshInterval
		// A record that differs from the verdict is written again, but
		// not within an interval of this term's own write: the probe
		// after a server's early first one can complete before the watch
		// has brought that write back (a failed write stays pending).
		verdict := changed || e.written.IsZero() || !recorded(snap, tg.id, tr) && now.Sub(e.written) >= p.cfg.Interval
		if verdict || refresh || lt.dirty(now, p.cfg.LoadRefresh) || t.rb.dirty(tg) {
			h := store.Health{Addr: tr.addr, Healthy: tr.status == statusUp, Since: tr.since,
				CheckedAt: now, Reason: tr.reason, Epoch: t.w.Epoch(), Leader: t.w.Name()}
			lt.fill(&h, p.cfg.ReportTTL)
			t.rb.fill(&h, tg)
			// Marked written now: a failed flush keeps h pending and
			// retries it, and a newer change replaces it.
			lt.markWritten(h)
			t.pending[tg.id] = h
			e.written = now
			// A verdict is written at once; load reports wait for the
			// end of the round, batched.
			t.urgent = t.urgent || verdict
		}
	}
}

// endRound closes one interval of the term: the self-fault checks, the
// rebalancing plan, the batched writes and the heartbeat.
func (t *term) endRound(ctx context.Context, now time.Time) error {
	p := t.p
	r := t.round
	t.round = roundStats{}
	fault := r.fault
	if r.local > 0 && float64(r.local) > p.cfg.SuspectShare*float64(r.probes) {
		fault = fmt.Sprintf("%d of %d probes failed on this host", r.local, r.probes)
	}
	if r.exhausted || !fdHeadroom() {
		t.exhaustedAt = now
	}
	if fault == "" && !t.exhaustedAt.IsZero() && now.Sub(t.exhaustedAt) < time.Duration(p.cfg.SelfFaultRounds)*p.cfg.Interval {
		// Probes spread over the interval rarely overlap, so a host at
		// its descriptor limit that frees one now and then passes the
		// share test while it cannot hold a fleet's sockets: having run
		// out within the last self-fault-rounds rounds is a fault.
		fault = "this host ran out of file descriptors"
	}
	if fault != "" {
		t.faults++
		p.metrics.selfFaultRounds.Inc()
		t.log.WithField("rounds", t.faults).Warn("this leader failed its own checks: " + fault)
		if t.faults >= p.cfg.SelfFaultRounds && p.hasPeers(ctx) {
			return fmt.Errorf("%w: %d rounds in a row, last: %s", ErrSelfFault, t.faults, fault)
		}
	} else {
		t.faults = 0
	}
	if ctx.Err() != nil {
		return nil
	}
	t.planRound(now)
	p.metrics.rounds.Inc()
	// The heartbeat vouches for every record of this epoch: only when all
	// are written and none is held back, and only after the term wrote
	// the records it probed (a record of an earlier epoch is not
	// confirmed by it anyway).
	t.beatOwed = p.cfg.HeartbeatInterval > 0 && fault == "" && !r.held && now.Sub(t.lastBeat) >= p.cfg.HeartbeatInterval-p.cfg.Interval/2
	if len(t.pending) > 0 || len(t.snap.OrphanHealth()) > 0 {
		if !now.Before(t.flushAfter) {
			t.flush(ctx, now)
		}
		return nil // the heartbeat, if owed, once the records are written
	}
	if !t.writing {
		t.beat(ctx, now)
	}
	return nil
}

// beat writes the heartbeat if one is owed and nothing of the round under
// way withholds it.
//
// The write runs on its own goroutine, as a flush does: the loop goes on
// probing and judging while etcd commits it (a commit under load takes
// tens of milliseconds, in which a death notice would otherwise wait).
// beatDone takes its outcome. One heartbeat at a time; one owed while
// another is in flight waits for the next round.
func (t *term) beat(ctx context.Context, now time.Time) {
	if !t.beatOwed || t.beating || t.round.held || t.round.fault != "" {
		return
	}
	t.beatOwed = false
	t.beating = true
	t.probes.Go(func() {
		t.beaten <- beatOutcome{at: now, err: t.heartbeat(ctx, now)} // never blocks: one at a time
	})
}

// beatOutcome is a heartbeat write's outcome; at is the time it carries.
type beatOutcome struct {
	at  time.Time
	err error
}

// beatDone takes a heartbeat write's outcome. It returns
// election.ErrNotLeader if the write found leadership lost.
func (t *term) beatDone(ctx context.Context, b beatOutcome) error {
	t.beating = false
	switch {
	case b.err == nil:
		t.lastBeat = b.at
		t.p.metrics.heartbeats.Inc()
	case errors.Is(b.err, election.ErrNotLeader):
		return b.err
	case ctx.Err() == nil:
		t.log.WithError(b.err).Warn("write heartbeat; retrying next round")
	}
	return nil
}

// planRound plans the next round's rebalancing asks from what was pulled.
func (t *term) planRound(now time.Time) {
	targets := make([]target, 0, len(t.entries))
	for id, e := range t.entries {
		targets = append(targets, target{id: id, addr: e.addr, statusURL: e.statusURL, shed: t.sheds[id]})
	}
	t.p.planRebalance(t.rb, t.snap, targets, t.trackers, t.loads, now, t.p.rebalanceMaxAge(), t.log)
	clear(t.sheds)
	for _, tg := range targets {
		if tg.shed > 0 {
			t.sheds[tg.id] = tg.shed
		}
	}
}

// flush starts writing the pending records, unless a flush is in flight:
// a few transactions at a time, taken out of pending and put back if they
// fail (see written).
func (t *term) flush(ctx context.Context, now time.Time) {
	if t.writing {
		return
	}
	chunks, err := t.p.takeWrites(t.snap, t.pending, flushTxns)
	if err != nil {
		t.log.WithError(err).Warn("write health records; retrying next round")
		t.flushAfter = now.Add(t.p.cfg.Interval)
		return
	}
	for _, c := range chunks {
		for _, id := range c.ids {
			delete(t.pending, id) // "" (an orphan's deletion) is not there
		}
	}
	t.urgent = len(t.pending) > 0
	if len(chunks) == 0 {
		return
	}
	t.writing = true
	t.probes.Go(func() {
		err := t.p.writeChunks(ctx, t.w, chunks)
		t.wrote <- flushed{chunks, err} // never blocks: one flush at a time
	})
}

// flushed is a flush's outcome: its chunks, each with its own, and the
// first error (election.ErrNotLeader before any other).
type flushed struct {
	chunks []*writeChunk
	err    error
}

// written takes a flush's outcome: the records of a failed transaction go
// back to pending unless a newer one is there, and writes are held back
// for a round (retrying sooner would only add load to a struggling etcd).
// It returns election.ErrNotLeader if a write found leadership lost.
func (t *term) written(ctx context.Context, f flushed, now time.Time) error {
	t.writing = false
	for _, c := range f.chunks {
		if c.err == nil {
			continue
		}
		for i, id := range c.ids {
			if _, newer := t.pending[id]; id != "" && !newer {
				t.pending[id] = c.hs[i]
			}
		}
	}
	t.urgent = len(t.pending) > 0
	if f.err != nil {
		if errors.Is(f.err, election.ErrNotLeader) {
			return f.err
		}
		if ctx.Err() == nil {
			t.log.WithError(f.err).Warn("write health records; retrying next round")
		}
		t.flushAfter = now.Add(t.p.cfg.Interval)
		t.beatOwed = false
		return nil
	}
	if len(t.pending) == 0 {
		t.beat(ctx, now)
	}
	return nil
}

// heartbeat writes the term's heartbeat key, fenced.
func (t *term) heartbeat(ctx context.Context, now time.Time) error {
	b, err := json.Marshal(store.Heartbeat{Epoch: t.w.Epoch(), Leader: t.w.Name(), At: now})
	if err != nil {
		return fmt.Errorf("encode heartbeat: %w", err)
	}
	tctx, cancel := context.WithTimeout(ctx, t.p.cfg.OpTimeout)
	defer cancel()
	_, err = t.w.Txn(tctx, nil, clientv3.OpPut(t.p.keys.Heartbeat(), string(b)))
	return err
}

// fdCanaries is the fewest descriptors a leader must have free: with
// links vouching for most servers it opens few sockets of its own, so a
// host at its descriptor limit is no longer revealed by failing probes.
const fdCanaries = 8

// fdHeadroom reports whether fdCanaries sockets can be opened at once
// (they are closed at once; nothing is sent).
func fdHeadroom() bool {
	var fds []int
	defer func() {
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}()
	for range fdCanaries {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return !outOfFiles(err)
		}
		fds = append(fds, fd)
	}
	return true
}

// openFileLimit returns the soft limit on open files; 0 if unknown.
func openFileLimit() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 0
	}
	return int(lim.Cur)
}

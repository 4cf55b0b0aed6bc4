package prober

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrSelfFault is returned by Run when the leader failed its own checks for
// SelfFaultRounds consecutive rounds while other replicas are registered:
// its probes failed on its own host, or other replicas reached servers it
// could not, or none of them could confirm a mass down-verdict. The caller
// should give up leadership and stay out of the election for
// SelfFaultBackoff, so that a replica that can probe leads.
var ErrSelfFault = errors.New("prober: the leader cannot probe")

// judge decides, for a batch of results and before any verdict is applied,
// which results count. It marks skip on every target whose result must not
// move its tracker: a failure on the prober's own host, and a failure that
// would take an up server down while the leader is suspect and was not
// confirmed by other replicas. It returns why this batch counts against the
// leader itself, or "". (That most probes of a round failed on the
// prober's own host is counted per round, by Run.)
//
// Probes are spread over the interval, so a batch holds only the servers
// whose turn it was. The leader is suspect when the batch holds a
// down-verdict and the up servers whose latest probe failed (counting this
// batch) number at least SuspectMin and more than SuspectShare of the up
// servers: every server is probed once per interval, so this is the share
// failing "at once", as a round used to see it. The leader then asks every
// other replica to probe the batch's down-verdicts (askPeers): a
// down-verdict is applied when a majority of the replicas that could probe
// the addr failed it too, and held otherwise. Without any other replica
// registered (nor seen within peerMemory) there is nobody to ask and the
// verdicts apply as they are; if replicas are registered but none answers,
// every down-verdict of the batch is held (up-verdicts are always
// applied).
//
// When other replicas are asked, they are also asked about the other up
// servers whose latest probe failed (probes are spread, so servers that
// died together reach fall failures at different times): those confirmed
// down are returned in extra, marked confirmed, to go down in this batch,
// so that a mass failure is written in one update as when a round's
// verdicts were (replicas' mass-removal guard looks at one update).
func (p *Prober) judge(ctx context.Context, targets []target, trackers map[string]*tracker, token string) (fault string, extra []target) {
	var cands []int
	failingNow := 0 // up servers failing in this batch for the first time
	for i := range targets {
		t := &targets[i]
		if t.local {
			t.skip = true
			continue
		}
		tr := trackers[t.id]
		if tr == nil || tr.status != statusUp || t.ok {
			continue
		}
		// A link that timed out is a failure of its own, counted by
		// apply before the notice probe's result: judged here with it, so
		// that a leader whose links all went silent at once (its own
		// route lost) is suspect before those failures take anyone down.
		streak := tr.streak
		if t.linkLost {
			streak++
		}
		if !tr.failing() {
			failingNow++
		}
		if streak+1 >= p.cfg.Fall || t.notice && t.refused {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return "", nil
	}
	up, failing := 0, failingNow
	for _, tr := range trackers {
		if tr.status == statusUp {
			up++
			if tr.failing() {
				failing++
			}
		}
	}
	if failing < p.cfg.SuspectMin || float64(failing) <= p.cfg.SuspectShare*float64(up) {
		return "", nil
	}
	p.metrics.suspectRounds.Inc()
	hold := func(why string) string {
		for _, i := range cands {
			targets[i].skip = true
		}
		p.metrics.heldVerdicts.Add(float64(len(cands)))
		p.log.WithField("servers", len(cands)).WithField("failing", failing).WithField("up", up).Warn("suspect round: holding down-verdicts: " + why)
		return why
	}
	if p.peers == nil {
		return fault, nil
	}
	peers, err := p.listPeers(ctx)
	switch {
	case err != nil:
		return hold(fmt.Sprintf("%d of %d up servers failed at once and the replica list is unreadable: %v", failing, up, err)), nil
	case len(peers) == 0:
		// Nobody to ask: a lone replica trusts its probes.
		p.log.WithField("servers", len(cands)).Warn("suspect round: no other replica is listed; applying the down-verdicts")
		return fault, nil
	case token == "":
		return hold("the opinion token is not written yet"), nil
	}
	if len(cands) > MaxOpinionAddrs {
		// What one request may carry; the rest wait for their next
		// probe, when they are candidates again.
		for _, i := range cands[MaxOpinionAddrs:] {
			targets[i].skip = true
		}
		p.metrics.heldVerdicts.Add(float64(len(cands) - MaxOpinionAddrs))
		cands = cands[:MaxOpinionAddrs]
	}
	addrs := make([]string, 0, len(cands))
	inBatch := make(map[string]bool, len(targets))
	for _, t := range targets {
		inBatch[t.id] = true
	}
	for _, i := range cands {
		addrs = append(addrs, targets[i].addr)
	}
	var others []target
	for id, tr := range trackers {
		if len(addrs) >= MaxOpinionAddrs {
			break
		}
		if tr.failing() && !inBatch[id] {
			others = append(others, target{id: id, addr: tr.addr, reason: "failing, and confirmed down by other replicas in a mass failure", confirmed: true})
			addrs = append(addrs, tr.addr)
		}
	}
	tally, answered := p.askPeers(ctx, peers, token, addrs)
	if answered == 0 {
		return hold(fmt.Sprintf("%d of %d up servers failed at once and none of %d other replicas answered", failing, up, len(peers))), nil
	}
	var confirmed, contradicted, unknown int
	for _, i := range cands {
		o := tally[targets[i].addr]
		switch {
		case 2*o.down > o.up+o.down:
			confirmed++
			continue
		case o.up > 0:
			contradicted++
		default:
			unknown++
		}
		targets[i].skip = true
	}
	for _, o := range others {
		if v := tally[o.addr]; 2*v.down > v.up+v.down {
			extra = append(extra, o)
		}
	}
	p.metrics.heldVerdicts.Add(float64(contradicted + unknown))
	log := p.log.WithField("confirmed", confirmed).WithField("contradicted", contradicted).
		WithField("unknown", unknown).WithField("replicas", answered)
	switch {
	case contradicted > 0:
		log.Warn("suspect round: other replicas reach servers this leader cannot; holding those verdicts")
		return fmt.Sprintf("other replicas reach %d servers this leader cannot", contradicted), nil
	case unknown > 0:
		log.Warn("suspect round: no other replica could probe some servers; holding those verdicts")
		return fmt.Sprintf("no other replica could confirm %d down-verdicts", unknown), extra
	}
	log.Info("suspect round: other replicas confirm the down-verdicts")
	return fault, extra
}

// peerMemory is how long a prober keeps asking the replicas it last saw
// listed when the list comes back empty: announcements live on leases, and
// an etcd in trouble can expire them all at once, which must not make a
// leader believe it is alone and apply a mass verdict unconfirmed.
const peerMemory = 5 * time.Minute

// listPeers lists the other replicas; an empty list is replaced by the
// last non-empty one seen within peerMemory. It is called from Run only.
func (p *Prober) listPeers(ctx context.Context) ([]Peer, error) {
	peers, err := p.peers.Peers(ctx)
	now := p.cfg.Now()
	switch {
	case err != nil:
		return nil, err
	case len(peers) > 0:
		p.lastPeers, p.lastPeersAt = peers, now
	case now.Sub(p.lastPeersAt) < peerMemory:
		peers = p.lastPeers
	}
	return peers, nil
}

// writeToken writes a fresh opinion token for this term, fenced, and
// returns it.
func (p *Prober) writeToken(ctx context.Context, w Writer) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make opinion token: %w", err)
	}
	token := hex.EncodeToString(b)
	tctx, cancel := context.WithTimeout(ctx, p.cfg.OpTimeout)
	defer cancel()
	if _, err := w.Txn(tctx, nil, clientv3.OpPut(p.keys.OpinionToken(), token)); err != nil {
		return "", err
	}
	return token, nil
}

package store

import (
	"context"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
)

// etcd raises an alarm cluster-wide when a member's backend reaches its
// quota (NOSPACE: --quota-backend-bytes) or finds its data corrupt
// (CORRUPT); while NOSPACE is raised etcd refuses every write, so no leader
// can write a verdict. The watcher lists the alarms every ResolveInterval
// and reports each in the snapshot's Problems (hence /v1/status and the
// status page) and in tcpdispatch_etcd_alarms.

// alarmText describes one alarm for Problems.
func alarmText(a *etcdserverpb.AlarmMember) string {
	switch a.Alarm {
	case etcdserverpb.AlarmType_NOSPACE:
		return fmt.Sprintf("etcd alarm NOSPACE on member %x: its database reached the quota (--quota-backend-bytes); etcd refuses every write, health verdicts included, until space is freed: compact, defragment, then disarm the alarm (docs/OPERATIONS.md)", a.MemberID)
	case etcdserverpb.AlarmType_CORRUPT:
		return fmt.Sprintf("etcd alarm CORRUPT on member %x: its data differs from its peers'; replace the member", a.MemberID)
	}
	return fmt.Sprintf("etcd alarm %s on member %x", a.Alarm, a.MemberID)
}

// checkAlarms lists etcd's alarms into m and the metric; it reports
// whether the list changed (the snapshot must then be rebuilt). A failed
// list (no quorum, no permission) leaves the last known list in place.
func (w *Watcher) checkAlarms(ctx context.Context, m *model) bool {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	resp, err := w.cli.AlarmList(ctx)
	if err != nil {
		return false
	}
	var texts []string
	counts := map[etcdserverpb.AlarmType]int{}
	for _, a := range resp.Alarms {
		if a.Alarm == etcdserverpb.AlarmType_NONE {
			continue
		}
		counts[a.Alarm]++
		texts = append(texts, alarmText(a))
	}
	slices.Sort(texts)
	for _, t := range []etcdserverpb.AlarmType{etcdserverpb.AlarmType_NOSPACE, etcdserverpb.AlarmType_CORRUPT} {
		w.alarms.WithLabelValues(t.String()).Set(float64(counts[t]))
	}
	if slices.Equal(texts, m.alarms) {
		return false
	}
	if len(texts) > 0 {
		w.log.WithField("alarms", texts).Error("ETCD ALARM: etcd refuses writes")
	}
	m.alarms = texts
	return true
}

// newAlarmMetric returns tcpdispatch_etcd_alarms, registered on reg when
// it is not nil.
func newAlarmMetric(reg prometheus.Registerer) (*prometheus.GaugeVec, error) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tcpdispatch_etcd_alarms",
		Help: "etcd alarms raised, by type (NOSPACE: the database reached --quota-backend-bytes and etcd refuses writes; CORRUPT)."},
		[]string{"alarm"})
	for _, t := range []string{etcdserverpb.AlarmType_NOSPACE.String(), etcdserverpb.AlarmType_CORRUPT.String()} {
		g.WithLabelValues(t).Set(0)
	}
	if reg != nil {
		if err := reg.Register(g); err != nil {
			return nil, fmt.Errorf("register store metrics: %w", err)
		}
	}
	return g, nil
}

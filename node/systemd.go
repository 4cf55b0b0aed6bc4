package node

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/tcpdispatch/tcpdispatch/store"
)

// notifySystemd reports the replica's life cycle to systemd (a unit with
// Type=notify) over $NOTIFY_SOCKET until ctx is cancelled:
//
//   - READY=1 once the replica has a snapshot, the moment /readyz starts
//     answering 200 (the HTTP listener is bound before this runs, and a
//     snapshot, once installed, is never removed);
//   - WATCHDOG=1 every third of $WATCHDOG_USEC when the unit sets
//     WatchdogSec=, so a replica whose goroutines no longer run is
//     restarted;
//   - STOPPING=1 when ctx is cancelled, i.e. when shutdown starts.
//
// Without $NOTIFY_SOCKET it returns at once. A failed notification is
// logged, never fatal: systemd then times the start out by itself.
func (n *Node) notifySystemd(ctx context.Context, w *store.Watcher) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	log := n.log.WithField("component", "systemd")
	notify := func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			log.WithError(err).Warn("sd_notify")
		}
	}
	defer notify(daemon.SdNotifyStopping)

	var tick <-chan time.Time
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.WithError(err).Warn("systemd watchdog settings ignored")
	}
	if interval > 0 {
		t := time.NewTicker(interval / 3)
		defer t.Stop()
		tick = t.C
	}
	changed := w.Changed()
	for {
		if changed != nil && w.Snapshot() != nil {
			notify(fmt.Sprintf("%s\nSTATUS=serving; snapshot at etcd revision %d", daemon.SdNotifyReady, w.Sync().Revision))
			changed = nil // a nil channel: from here on only the watchdog and ctx
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			changed = w.Changed()
		case <-tick:
			notify(daemon.SdNotifyWatchdog)
		}
	}
}

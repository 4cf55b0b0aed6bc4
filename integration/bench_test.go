package integration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkPutToServe measures the time from an etcd put of an operator
// key to every replica of a three-replica cluster serving a snapshot that
// contains it (its /v1/status revision reaches the put's revision). It
// reports the median, p90 and max over 50 puts (target: median < 50ms).
func BenchmarkPutToServe(b *testing.B) {
	c := startCluster(b, clusterOpts{replicas: 3, extra: coreFlags})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.waitServing(b)
	var lat []time.Duration
	for b.Loop() {
		for i := range 50 {
			start := time.Now()
			resp, err := c.cli.Put(ctx, c.prefix+"servers/bench/weight", fmt.Sprint(100+i))
			if err != nil {
				b.Fatal(err)
			}
			rev := resp.Header.Revision
			var wg sync.WaitGroup
			for _, r := range c.replicas {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						if s, err := r.status(); err == nil && s.Revision >= rev {
							return
						}
						time.Sleep(500 * time.Microsecond)
					}
				}()
			}
			wg.Wait()
			lat = append(lat, time.Since(start))
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// waitServing waits until every replica has a snapshot.
func (c *cluster) waitServing(tb testing.TB) {
	eventually(tb, 30*time.Second, "replicas serving", func() error {
		for _, r := range c.replicas {
			s, err := r.status()
			if err != nil {
				return err
			}
			if s.Etcd != "ok" {
				return fmt.Errorf("%s: etcd %s", r.name, s.Etcd)
			}
		}
		return nil
	})
}

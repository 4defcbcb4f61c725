package swim

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gather registers cs in a fresh registry (which checks them) and returns
// the value of the named counter or gauge with the given labels.
func gather(t *testing.T, cs []prometheus.Collector, name string, labels map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(prometheus.NewGoCollector()); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func TestCollectorsRegisterAndReport(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	a := c.start("a", "dc-a", RoleCoordinator)
	b := c.start("b", "dc-b", RoleAgent)
	if _, err := b.Join([]string{a.addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a lists b", func() bool { return a.state("b") == StateAlive })
	if got := gather(t, a.Collectors(), "coordinatord_swim_members", map[string]string{"state": "alive"}); got != 2 {
		t.Errorf("alive members gauge = %v, want 2", got)
	}
	if got := gather(t, a.Collectors(), "coordinatord_swim_stream_bytes_total", map[string]string{"direction": "received"}); got == 0 {
		t.Errorf("no stream bytes received counted after a join")
	}
	if got := gather(t, a.Collectors(), "coordinatord_swim_member_events_total", map[string]string{"state": "alive"}); got != 2 {
		t.Errorf("alive events counter = %v, want 2", got)
	}
}

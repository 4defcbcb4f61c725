package server

import (
	"context"
	"testing"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
)

// BenchmarkAdmissionOverHTTP measures POST /v1/admission over mTLS on a
// kept-alive connection, with the decision cache off and on.
//
//	go test -run '^$' -bench BenchmarkAdmissionOverHTTP -benchmem ./server
func BenchmarkAdmissionOverHTTP(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache int
	}{{"uncached", 0}, {"cached", 10000}} {
		b.Run(bc.name, func(b *testing.B) {
			n := startNodeWith(b, func(c *Config) { c.DecisionCacheSize = bc.cache })
			c := n.client(engine.RoleManager)
			req := api.AdmissionRequest{
				Source: &api.Peer{SPIFFEID: spiffe(engine.RoleWorker)}, Target: &api.Peer{SPIFFEID: spiffe(engine.RoleManager)}, Action: "connect",
			}
			ctx := context.Background()
			if r, err := c.Admission(ctx, req); err != nil || !r.Allowed {
				b.Fatalf("%+v %v", r, err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Admission(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

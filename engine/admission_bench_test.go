package engine

import (
	"context"
	"testing"
)

// BenchmarkDecide measures one in-process admission decision with the
// default policy: uncached (every call evaluates Rego) and cached.
//
//	go test -run '^$' -bench BenchmarkDecide -benchmem ./engine
func BenchmarkDecide(b *testing.B) {
	for _, bc := range []struct {
		name      string
		cacheSize int
	}{{"uncached", 0}, {"cached", 1000}} {
		b.Run(bc.name, func(b *testing.B) {
			e := newTestEngine(b, bc.cacheSize)
			in := Input{Source: peer(RoleWorker, "prod", "live"), Target: peer(RoleManager, "prod", "live"), Action: "connect"}
			ctx := context.Background()
			if d := e.Decide(ctx, in); !d.Allowed {
				b.Fatalf("denied: %q", d.Reasons)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				e.Decide(ctx, in)
			}
		})
	}
}

// BenchmarkDecideDenied measures a denial, which also evaluates reasons.
func BenchmarkDecideDenied(b *testing.B) {
	e := newTestEngine(b, 0)
	in := Input{Source: peer(RoleWorker, "prod", "live"), Target: peer(RoleGate, "prod", "live"), Action: "connect"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(ctx, in)
	}
}

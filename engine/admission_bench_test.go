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

// BenchmarkDecideAPI measures uncached decisions on coordinatord's own API,
// which the default policy answers from its API table rather than the peer
// table: an allowed call (a manager checks admission) and a denied one (a
// worker writes a policy, which also evaluates reasons).
func BenchmarkDecideAPI(b *testing.B) {
	for _, bc := range []struct {
		name   string
		source Role
		action string
		allow  bool
	}{
		{"allowed", RoleManager, "admission.check", true},
		{"denied", RoleWorker, "policy.write", false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newTestEngine(b, 0)
			in := Input{Source: peer(bc.source, "prod", "live"), Target: peer(RoleCoordinator, "prod", "live"), Action: bc.action}
			ctx := context.Background()
			if d := e.Decide(ctx, in); d.Allowed != bc.allow {
				b.Fatalf("allowed = %v, want %v; reasons %q", d.Allowed, bc.allow, d.Reasons)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				e.Decide(ctx, in)
			}
		})
	}
}

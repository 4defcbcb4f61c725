package modules_test

import (
	"context"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// BenchmarkWazeroCall measures one handler call on an instantiated module
// (coordinatord_alloc, copying a small event in, the handler, output) with
// wazero directly and host functions that do nothing: the floor under the
// sandbox's pooled call. "ctxdone" is with WithCloseOnContextDone(true),
// which the sandbox needs for its time limit and which makes wazero check
// for cancellation at every function entry and loop back-edge.
//
//	go test -run '^$' -bench WazeroCall ./examples/modules
func BenchmarkWazeroCall(b *testing.B) {
	cases := []struct {
		ex      example
		handler string
		event   string
	}{
		{examples[0], "coordinatord_on_job_result", jobResultEvent},
		{examples[1], "coordinatord_on_correlation", correlationEvent("partition_detected", "dc3", "dc4")},
		{examples[2], "coordinatord_on_job_result", jobResultEvent},
	}
	for _, c := range cases {
		for _, ctxDone := range []bool{false, true} {
			name := c.ex.dir
			if ctxDone {
				name += "/ctxdone"
			}
			b.Run(name, func(b *testing.B) {
				ctx := context.Background()
				r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(ctxDone))
				defer r.Close(ctx)
				wasi_snapshot_preview1.MustInstantiate(ctx, r)
				var outputs int
				_, err := r.NewHostModuleBuilder("coordinatord").
					NewFunctionBuilder().WithFunc(func(ptr, n uint32) { outputs++ }).Export("output").
					NewFunctionBuilder().WithFunc(func(level, ptr, n uint32) {}).Export("log").
					NewFunctionBuilder().WithFunc(func(ptr, n uint32) {}).Export("fail").
					Instantiate(ctx)
				if err != nil {
					b.Fatal(err)
				}
				cfg := wazero.NewModuleConfig()
				if c.ex.dir != "c-reporter" {
					cfg = cfg.WithStartFunctions("_initialize")
				}
				mod, err := r.InstantiateWithConfig(ctx, c.ex.read(b), cfg)
				if err != nil {
					b.Fatal(err)
				}
				alloc, h := mod.ExportedFunction("coordinatord_alloc"), mod.ExportedFunction(c.handler)
				ev := []byte(c.event)
				b.ReportAllocs()
				for b.Loop() {
					p, err := alloc.Call(ctx, uint64(len(ev)))
					if err != nil {
						b.Fatal(err)
					}
					mod.Memory().Write(uint32(p[0]), ev)
					res, err := h.Call(ctx, p[0], uint64(len(ev)))
					if err != nil || res[0] != 0 {
						b.Fatal(err, res)
					}
				}
				if outputs != b.N {
					b.Fatalf("%d outputs for %d calls", outputs, b.N)
				}
			})
		}
	}
}

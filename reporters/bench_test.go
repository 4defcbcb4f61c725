package reporters

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPipeline measures sustained throughput: job results submitted
// as fast as the queue takes them (a full queue is waited out, as a
// reporting peer retries a 429), each dispatched to the Go example reporter
// (examples/modules/go-reporter) in the Wasm sandbox, its record written to
// a file sink. The clock stops once the queue is drained and the file
// flushed. It reports events/s, the peak heap in use while it ran, and the
// queue bound.
//
//	go test -run '^$' -bench BenchmarkPipeline -benchtime 5s ./reporters
func BenchmarkPipeline(b *testing.B) {
	for _, mod := range []struct{ name, path string }{{"go-reporter", goReporter}, {"wat-reporter", watReporter}} {
		b.Run(mod.name, func(b *testing.B) {
			sb, reg := sandboxWith(b, nil,
				map[string][]byte{"r": readModule(b, mod.path)},
				map[string][]string{"r": {"results=file:results.jsonl"}})
			cfg := DefaultConfig()
			cfg.SinkDir = b.TempDir()
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			p, err := New(cfg, SandboxInvoker(sb), reg)
			if err != nil {
				b.Fatal(err)
			}
			// Warm the instance pool and the sink.
			if _, err := p.SubmitJobResult(JobResult{JobID: "warm", Workflow: "w", Datacenter: "dc1", Source: "s", Stats: json.RawMessage(`{}`)}); err != nil {
				b.Fatal(err)
			}
			for p.QueueLen() > 0 {
				time.Sleep(time.Millisecond)
			}
			runtime.GC()

			var peakHeap atomic.Uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				t := time.NewTicker(20 * time.Millisecond)
				defer t.Stop()
				var ms runtime.MemStats
				for {
					select {
					case <-stop:
						return
					case <-t.C:
						runtime.ReadMemStats(&ms)
						if ms.HeapInuse > peakHeap.Load() {
							peakHeap.Store(ms.HeapInuse)
						}
					}
				}
			}()

			stats := json.RawMessage(`{"rows": 1200, "seconds": 3.5, "ok": true}`)
			full := 0
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				jr := JobResult{JobID: "job-" + strconv.Itoa(i), Workflow: "nightly-etl", Datacenter: "dc" + strconv.Itoa(i%3), Source: "manager-4", Stats: stats}
				for {
					_, err := p.SubmitJobResult(jr)
					if err == nil {
						break
					}
					if !errors.Is(err, ErrQueueFull) {
						b.Fatal(err)
					}
					full++
					time.Sleep(50 * time.Microsecond)
				}
			}
			if err := p.Close(); err != nil { // drains the queue, flushes the file
				b.Fatal(err)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			close(stop)
			<-sampled
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(peakHeap.Load())/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(cfg.QueueSize), "queue-bound")
			b.ReportMetric(float64(full)/float64(b.N), "full/op")
		})
	}
}

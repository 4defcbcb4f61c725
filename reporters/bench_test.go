package reporters

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPipeline measures sustained throughput: job results submitted
// as fast as the queue takes them (a full queue is waited out, as a
// reporting peer retries a 429), each dispatched to the Go example reporter
// (examples/modules/go-reporter) in the Wasm sandbox, its record written to
// a file sink. The clock stops once the queue is drained and the file
// flushed. It reports events/s, the CPU time per event (which does not
// depend on what else the machine runs), the peak heap in use while it ran,
// and the queue bound.
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
			cpu0 := cpuTime(b)
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
			cpu := cpuTime(b) - cpu0
			b.StopTimer()
			close(stop)
			<-sampled
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			// CPU time per event does not depend on what else the machine
			// runs: 2 cores / cpu-µs/event is the throughput of an idle
			// 2-core machine.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/event")
			b.ReportMetric(float64(peakHeap.Load())/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(cfg.QueueSize), "queue-bound")
			b.ReportMetric(float64(full)/float64(b.N), "full/op")
		})
	}
}

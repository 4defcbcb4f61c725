package wasm

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// versioned returns the version test module answering {"version":n} and
// logging "version n".
func versioned(t testing.TB, n int) []byte {
	t.Helper()
	b := testModule(t, "version")
	b = bytes.Replace(b, []byte(`{"version":1}`), []byte(fmt.Sprintf(`{"version":%d}`, n)), 1)
	return bytes.Replace(b, []byte("version 1"), []byte(fmt.Sprintf("version %d", n)), 1)
}

// Many goroutines call healthy, trapping and looping modules while one
// replaces a module again and again and another removes and reinstalls a
// trapping one. Every call answers from exactly one version (output, logs
// and digest agree), failures are the expected ones, and when it is over
// only the current versions' idle instances are alive.
func TestConcurrentCallsTrapsAndReplacement(t *testing.T) {
	s, logs := newSandbox(t, Config{MaxIdle: 4})
	ctx := context.Background()
	short := DefaultLimits()
	short.CallTimeout = 5 * time.Millisecond

	v1, v2 := versioned(t, 1), versioned(t, 2)
	digest := map[string]string{}
	for n, b := range map[string][]byte{"1": v1, "2": v2} {
		info, err := s.Validate(ctx, KindReporter, b)
		if err != nil {
			t.Fatal(err)
		}
		digest[info.Digest] = n
	}
	install(t, s, "good", KindReporter, relaxed(), example(t, "reporter"))
	install(t, s, "ver", KindReporter, relaxed(), v1)
	install(t, s, "bad", KindReporter, relaxed(), example(t, "unreachable"))
	install(t, s, "loop", KindReporter, short, example(t, "endless_loop"))

	const workers, calls, replacements = 16, 60, 40
	errs := make(chan error, workers*calls+2)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				c := jobResult(t, fmt.Sprintf("dc%d", w%5), fmt.Sprintf("job-%d-%d", w, i))
				var err error
				switch i % 6 {
				case 0, 1:
					res := s.Call(ctx, "ver", c)
					err = checkVersion(res, digest)
				case 2:
					if res := s.Call(ctx, "good", c); res.Err != nil {
						err = fmt.Errorf("good: %v", res.Err)
					}
				case 3, 4:
					res := s.Call(ctx, "bad", c)
					if ce, ok := res.Err.(*CallError); !ok || (ce.Kind != FailTrap && ce.Kind != FailNotInstalled) {
						err = fmt.Errorf("bad: %v", res.Err)
					}
				case 5:
					if w%4 == 0 { // a few timeouts, not 60 per worker
						res := s.Call(ctx, "loop", c)
						if ce, ok := res.Err.(*CallError); !ok || ce.Kind != FailTimeout {
							err = fmt.Errorf("loop: %v", res.Err)
						}
					}
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range replacements {
			b := v1
			if i%2 == 0 {
				b = v2
			}
			if _, err := s.Install(ctx, "ver", KindReporter, relaxed(), b); err != nil {
				errs <- err
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range replacements / 4 {
			s.Remove("bad")
			if _, err := s.Install(ctx, "bad", KindReporter, relaxed(), example(t, "unreachable")); err != nil {
				errs <- err
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// Only the current versions' idle instances are left.
	for _, name := range []string{"ver", "good", "bad", "loop"} {
		s.mu.RLock()
		m := s.modules[name]
		s.mu.RUnlock()
		m.mu.Lock()
		idle, inflight := len(m.idle), m.inflight
		m.mu.Unlock()
		if g := gauge(s, name); g != float64(idle) || inflight != 0 || idle > 4 {
			t.Errorf("%s: %v live instances, %d idle, %d in flight", name, g, idle, inflight)
		}
	}
	// Every trap was reported with the event's datacenter and job.
	for _, r := range logs.failures(t, "bad") {
		if dcs, jobs := strs(r["datacenters"]), strs(r["job_ids"]); len(dcs) != 1 || len(jobs) != 1 {
			t.Fatalf("trap record without its event: %v", r)
		}
	}
	healthyCall(t, s)
}

// checkVersion checks that output, logs and digest of a call of "ver" name
// the same version.
func checkVersion(res Result, digest map[string]string) error {
	if res.Err != nil {
		return fmt.Errorf("ver: %v", res.Err)
	}
	n, ok := digest[res.Digest]
	if !ok {
		return fmt.Errorf("ver: unknown digest %s", res.Digest)
	}
	if want := `{"version":` + n + `}`; string(res.Output) != want {
		return fmt.Errorf("ver: output %s from digest of version %s", res.Output, n)
	}
	for _, l := range res.Logs {
		if l.Text != "initialized" && l.Text != "version "+n {
			return fmt.Errorf("ver: log %q from version %s", l.Text, n)
		}
	}
	return nil
}

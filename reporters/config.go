package reporters

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"time"
)

// Config tunes a Pipeline. Start from DefaultConfig; a Config is a value,
// and New never modifies the caller's copy.
type Config struct {
	// QueueSize bounds the events waiting for a worker. A job result that
	// finds it full is refused (ErrQueueFull); a lease event is dropped and
	// counted. It bounds the pipeline's memory: at most QueueSize events
	// (each at most MaxEventBytes) plus one per worker in flight.
	QueueSize int
	// Workers is how many events are dispatched at once. Each runs one
	// module call at a time, so it also bounds the sandbox instances the
	// pipeline keeps busy; a slow webhook holds its worker.
	Workers int
	// SinkDir is the directory file sinks' relative paths are under. Empty
	// makes every file sink fail (recorded as a sink error).
	SinkDir string
	// FlushInterval is how often buffered file and stdout sinks are
	// written out (and on Close).
	FlushInterval time.Duration
	// WebhookTimeout bounds one webhook attempt unless the sink sets its
	// own.
	WebhookTimeout time.Duration
	// WebhookRetries is how many times a webhook POST is retried after a
	// network error or a 5xx answer unless the sink sets its own.
	WebhookRetries int
	// WebhookBackoff is the first pause between webhook attempts; it
	// doubles, up to 2 s.
	WebhookBackoff time.Duration
	// HTTPClient sends webhook requests. Nil means a client of its own
	// (no overall timeout: each attempt has WebhookTimeout).
	HTTPClient *http.Client
	// Stdout receives stdout sinks' lines. Nil means os.Stdout.
	Stdout io.Writer
	// ResultJobs bounds the jobs whose reporter results are kept, once for
	// job results and once for lease events (so that renewals never evict
	// job results); past it the least recently updated job's results are
	// evicted (and counted).
	ResultJobs int
	// ResultsPerJob bounds the (reporter, datacenter, event) results kept
	// for one job; further ones are counted and not kept.
	ResultsPerJob int
	// DrainTimeout is how long Close lets the workers finish the queued
	// events before it cancels the calls in flight and counts what is left
	// as dropped.
	DrainTimeout time.Duration
	// Clock is the pipeline's only source of time (event and result
	// times). Nil means time.Now.
	Clock func() time.Time
	// Logger receives the pipeline's records. Nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the configuration a node uses unless told
// otherwise.
func DefaultConfig() Config {
	return Config{
		// About 3 s of events at 10,000 events/s: absorbs bursts, and at
		// most 4096 × 64 KiB in the worst case.
		QueueSize: 4096,
		// Module calls are CPU-bound and file and stdout sinks buffered:
		// one worker per core. More only add instances (memory) and
		// scheduling: measured with the Go reporter on 2 cores, 4 workers
		// did fewer events per second than 2 and used 40% more heap.
		// Raise it when slow webhooks hold workers.
		Workers:        max(2, runtime.GOMAXPROCS(0)),
		FlushInterval:  100 * time.Millisecond,
		WebhookTimeout: 5 * time.Second,
		WebhookRetries: 3,
		WebhookBackoff: 200 * time.Millisecond,
		ResultJobs:     10000,
		ResultsPerJob:  256,
		DrainTimeout:   5 * time.Second,
	}
}

// MaxEventBytes bounds the JSON of one event handed to a module: a job
// result's stats and its envelope.
const MaxEventBytes = 64 << 10

// Validate checks cfg; the error names the field.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("reporters config: "+format, args...))
		}
	}
	check(c.QueueSize > 0, "QueueSize %d must be positive", c.QueueSize)
	check(c.Workers > 0, "Workers %d must be positive", c.Workers)
	check(c.Workers <= 1024, "Workers %d is more than 1024", c.Workers)
	check(c.FlushInterval > 0, "FlushInterval %s must be positive", c.FlushInterval)
	check(c.WebhookTimeout > 0, "WebhookTimeout %s must be positive", c.WebhookTimeout)
	check(c.WebhookRetries >= 0, "WebhookRetries %d must not be negative", c.WebhookRetries)
	check(c.WebhookBackoff > 0, "WebhookBackoff %s must be positive", c.WebhookBackoff)
	check(c.ResultJobs > 0, "ResultJobs %d must be positive", c.ResultJobs)
	check(c.ResultsPerJob > 0, "ResultsPerJob %d must be positive", c.ResultsPerJob)
	check(c.DrainTimeout >= 0, "DrainTimeout %s must not be negative", c.DrainTimeout)
	return errors.Join(errs...)
}

// withDefaults fills the optional fields that have a natural default.
func (c Config) withDefaults() Config {
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.Stdout == nil {
		c.Stdout = os.Stdout
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

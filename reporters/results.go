package reporters

import (
	"container/list"
	"sort"
	"sync"
	"time"
)

// Result statuses.
const (
	// StatusPending: the event is queued for the reporter.
	StatusPending = "pending"
	// StatusOK: the last call succeeded and its records were written.
	StatusOK = "ok"
	// StatusError: the last call, or a write of its records, failed.
	StatusError = "error"
)

// Error kinds the pipeline itself gives (the invoker gives the others).
const (
	ErrKindInvalidOutput = "invalid_output"
	ErrKindSink          = "sink"
	ErrKindShutdown      = "shutdown"
)

// Result is the outcome of the last call of one reporter for one job, one
// datacenter and one event kind. Results of different datacenters never
// overwrite each other: the datacenter is part of the key.
type Result struct {
	JobID    string
	Reporter string
	Digest   string
	// Datacenter is the job result's datacenter, or the lease owner's.
	Datacenter string
	// Event is KindJobResult or KindLeaseEvent; EventType is a lease
	// event's type (acquired, renewed, released, expired).
	Event     string
	EventType string
	Status    string
	// ErrorKind and Error describe a failure (Status error).
	ErrorKind string
	Error     string
	// Elapsed is the module call's duration; SinkElapsed the time spent
	// writing its records.
	Elapsed     time.Duration
	SinkElapsed time.Duration
	// At is when the call finished (or, pending, when it was queued).
	At time.Time
	// Records is how many records the last call wrote.
	Records int
	// Calls and Failures count every call for this key.
	Calls, Failures uint64

	// seq is the pipeline's sequence number of the event the result
	// describes, so a finished older event never overwrites a newer one.
	seq uint64
}

type resultKey struct {
	reporter, datacenter, event string
}

// jobResults is one job's results, an element of Results.order.
type jobResults struct {
	jobID   string
	results map[resultKey]*Result
}

// Results keeps reporter results per job in memory, bounded by job count:
// the least recently updated job goes first. It is safe for concurrent use.
// A Pipeline keeps one for job results' outcomes and one for lease
// events', each bounded by Config.ResultJobs.
type Results struct {
	maxJobs, perJob int
	onEvict         func() // counts an evicted job
	onOverflow      func() // counts a result not kept (per-job bound)
	mu              sync.Mutex
	jobs            map[string]*list.Element // of *jobResults
	order           *list.List               // front: most recently updated
}

func newResults(maxJobs, perJob int, onEvict, onOverflow func()) *Results {
	return &Results{maxJobs: maxJobs, perJob: perJob, onEvict: onEvict, onOverflow: onOverflow,
		jobs: make(map[string]*list.Element), order: list.New()}
}

// update applies fn to the result of (job, key), creating it if needed.
func (r *Results) update(jobID string, k resultKey, fn func(*Result)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	el, ok := r.jobs[jobID]
	if ok {
		r.order.MoveToFront(el)
	} else {
		if len(r.jobs) >= r.maxJobs {
			oldest := r.order.Back()
			r.order.Remove(oldest)
			delete(r.jobs, oldest.Value.(*jobResults).jobID)
			r.onEvict()
		}
		el = r.order.PushFront(&jobResults{jobID: jobID, results: make(map[resultKey]*Result, 2)})
		r.jobs[jobID] = el
	}
	jr := el.Value.(*jobResults)
	res, ok := jr.results[k]
	if !ok {
		if len(jr.results) >= r.perJob {
			r.onOverflow()
			return
		}
		res = &Result{JobID: jobID, Reporter: k.reporter, Datacenter: k.datacenter, Event: k.event}
		jr.results[k] = res
	}
	fn(res)
}

// Job returns the results of jobID sorted by reporter, datacenter and
// event; nil when none are kept.
func (r *Results) Job(jobID string) []Result {
	r.mu.Lock()
	el, ok := r.jobs[jobID]
	var out []Result
	if ok {
		jr := el.Value.(*jobResults)
		out = make([]Result, 0, len(jr.results))
		for _, res := range jr.results {
			out = append(out, *res)
		}
	}
	r.mu.Unlock()
	sortResults(out)
	return out
}

// sortResults orders results by reporter, datacenter and event kind.
func sortResults(rs []Result) {
	sort.Slice(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if a.Reporter != b.Reporter {
			return a.Reporter < b.Reporter
		}
		if a.Datacenter != b.Datacenter {
			return a.Datacenter < b.Datacenter
		}
		return a.Event < b.Event
	})
}

// Len is the number of jobs with results.
func (r *Results) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.jobs)
}

package main

import (
	"context"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
)

// StackedResult compares stacked limits ("60 a minute and 1000 an hour"),
// where every call takes a token from two buckets in turn, with one bucket.
type StackedResult struct {
	Throughput []StackedThroughputRow `json:"throughput"`
	Overhead   []StackedOverheadRow   `json:"overhead"`
}

// StackedThroughputRow is the grant rate of callers on the acquirer directly,
// with plenty of tokens, each call acquiring from one bucket or from two in
// turn; a call acquiring from two counts as granted when both granted it.
type StackedThroughputRow struct {
	Processes int     `json:"processes"`
	Callers   int     `json:"callers"`
	One       LoadRow `json:"one"`
	Two       LoadRow `json:"two"`
	// TwoVsOne is Two's MeanGrantsPerSec over One's; 0 when One granted nothing.
	TwoVsOne float64 `json:"twoVsOne,omitempty"`
}

// StackedOverheadRow is the latency of a workflow running one no-op
// activity guarded by two buckets, against one bucket and against the
// interceptor off, as the overhead scenario measures it.
type StackedOverheadRow struct {
	Concurrency int     `json:"concurrency"`
	PauseMs     float64 `json:"pauseMs"`
	Workflows   int     `json:"workflowsPerRep"`
	Reps        int     `json:"reps"`
	OffP50ms    float64 `json:"offP50ms"`
	OffP99ms    float64 `json:"offP99ms"`
	OneP50ms    float64 `json:"oneP50ms"`
	OneP99ms    float64 `json:"oneP99ms"`
	TwoP50ms    float64 `json:"twoP50ms"`
	TwoP99ms    float64 `json:"twoP99ms"`
	// Ratios are medians over reps of the per-rep ratios.
	TwoVsOneP50 float64 `json:"twoVsOneP50"`
	TwoVsOneP99 float64 `json:"twoVsOneP99"`
	OneVsOffP50 float64 `json:"oneVsOffP50"`
	OneVsOffP99 float64 `json:"oneVsOffP99"`
	TwoVsOffP50 float64 `json:"twoVsOffP50"`
	TwoVsOffP99 float64 `json:"twoVsOffP99"`
	// Slow* count the workflows whose result reached the client more than a
	// second after the server closed them (see runWorkflows).
	SlowOff int `json:"slowOff"`
	SlowOne int `json:"slowOne"`
	SlowTwo int `json:"slowTwo"`
}

// The two stacked buckets stand for a per-minute and a per-hour limit, but
// hold plenty of tokens and are never refilled: what is measured is the cost
// of asking two buckets, not their limits.
var (
	stackedFirst  = bucket.Spec{Name: "per_minute", Schedule: "@yearly", Amount: 1, Maximum: bucket.MaxTokens}
	stackedSecond = bucket.Spec{Name: "per_hour", Schedule: "@yearly", Amount: 1, Maximum: bucket.MaxTokens}
)

const (
	queueOneGuard  = "bench-one-guard"
	queueTwoGuards = "bench-two-guards"
	stackedCallers = 128
)

func runStacked(ctx context.Context, cfg config) (*StackedResult, error) {
	dur := time.Duration(cfg.scale(3, 10)) * time.Second
	res := &StackedResult{}
	for _, procs := range []int{1, 4} {
		row := StackedThroughputRow{Processes: procs, Callers: stackedCallers}
		var err error
		if row.One, err = stackedCell(ctx, procs, stackedCallers, 1, dur); err != nil {
			return nil, err
		}
		if row.Two, err = stackedCell(ctx, procs, stackedCallers, 2, dur); err != nil {
			return nil, err
		}
		if row.One.MeanGrantsPerSec > 0 {
			row.TwoVsOne = row.Two.MeanGrantsPerSec / row.One.MeanGrantsPerSec
		}
		cfg.logf("stacked: P=%d C=%d: one bucket %.0f grants/s, p99 %.1fms; two %.0f grants/s, p99 %.1fms (%.2fx); errors %d / %d, ResourceExhausted %d / %d",
			procs, stackedCallers, row.One.MeanGrantsPerSec, row.One.P99ms, row.Two.MeanGrantsPerSec, row.Two.P99ms, row.TwoVsOne,
			row.One.Errors, row.Two.Errors, row.One.ResourceExhausted, row.Two.ResourceExhausted)
		res.Throughput = append(res.Throughput, row)
	}
	var err error
	if res.Overhead, err = stackedOverhead(ctx, cfg); err != nil {
		return nil, err
	}
	return res, nil
}

// stackedCell measures callers over procs clients, each call acquiring one
// token from each of the first buckets (1 or 2) in turn, on a server of its
// own, so that neither mode's aftermath reaches the other's measurement.
func stackedCell(ctx context.Context, procs, callers, buckets int, dur time.Duration) (LoadRow, error) {
	e, err := newEnv(ctx, true, nil)
	if err != nil {
		return LoadRow{}, err
	}
	defer e.close()
	// Both buckets run in either mode, so the worker holds the same workflows.
	for _, spec := range []bucket.Spec{stackedFirst, stackedSecond} {
		if err := e.startBucket(ctx, spec, 0); err != nil {
			return LoadRow{}, err
		}
	}
	names := []string{stackedFirst.Name, stackedSecond.Name}[:buckets]
	clients := make([]client.Client, procs)
	for i := range clients {
		if clients[i], err = e.newClient(); err != nil {
			return LoadRow{}, err
		}
	}
	lims, err := acquirers(clients)
	if err != nil {
		return LoadRow{}, err
	}
	return loadCell(ctx, e, lims, callers, "s", dur, func(ctx context.Context, lim interceptor.Limiter, _ int, id string) (bool, error) {
		for _, name := range names {
			d, err := lim.Acquire(ctx, name, id, 1)
			if err != nil || !d.Granted {
				return false, err
			}
		}
		return true, nil
	}), nil
}

// stackedOverhead is the overhead scenario's measurement with a queue whose
// no-op activity is guarded by both stacked buckets, one guarded by the
// first alone, and one with the interceptor off, each on its own worker.
func stackedOverhead(ctx context.Context, cfg config) ([]StackedOverheadRow, error) {
	e, err := newEnv(ctx, true, nil)
	if err != nil {
		return nil, err
	}
	defer e.close()
	for _, spec := range []bucket.Spec{stackedFirst, stackedSecond} {
		if err := e.startBucket(ctx, spec, 0); err != nil {
			return nil, err
		}
	}
	first := bucket.Guard{Bucket: stackedFirst.Name, Cost: 1}
	second := bucket.Guard{Bucket: stackedSecond.Name, Cost: 1}
	for _, q := range []struct {
		name   string
		guards []bucket.Guard // none: no interceptor
	}{{queueOff, nil}, {queueOneGuard, []bucket.Guard{first}}, {queueTwoGuards, []bucket.Guard{first, second}}} {
		var interceptors []temporalinterceptor.WorkerInterceptor
		if len(q.guards) > 0 {
			limiter, err := interceptor.New(interceptor.Options{Guards: map[string][]bucket.Guard{noopActivity: q.guards}})
			if err != nil {
				return nil, err
			}
			interceptors = append(interceptors, limiter)
		}
		w := worker.New(e.c, q.name, worker.Options{Interceptors: interceptors})
		w.RegisterWorkflowWithOptions(noopOnce, workflow.RegisterOptions{Name: noopWorkflow})
		w.RegisterActivityWithOptions(noop, activity.RegisterOptions{Name: noopActivity})
		if err := e.start(w); err != nil {
			return nil, err
		}
	}

	queues := []string{queueOff, queueOneGuard, queueTwoGuards}
	var rows []StackedOverheadRow
	for _, c := range []struct {
		conc  int
		pause time.Duration
	}{{1, 200 * time.Millisecond}, {32, 0}} {
		conc, pause := c.conc, c.pause
		n := cfg.scale(100, 300) * max(1, conc/10)
		if pause > 0 {
			n = cfg.scale(50, 150)
		}
		for _, q := range queues { // warm up
			if _, _, err := runWorkflows(ctx, e.c, q, conc, 2*conc, 0); err != nil {
				return nil, err
			}
		}
		row := StackedOverheadRow{Concurrency: conc, PauseMs: ms(pause), Workflows: n, Reps: cfg.reps}
		p50, p99 := map[string][]float64{}, map[string][]float64{}
		var twoOne50, twoOne99, oneOff50, oneOff99, twoOff50, twoOff99 []float64
		for rep := range cfg.reps {
			// Rotate which mode goes first, so drift in the machine's load favours none.
			lat := map[string][]time.Duration{}
			for k := range queues {
				q := queues[(k+rep)%len(queues)]
				var slow int
				if lat[q], slow, err = runWorkflows(ctx, e.c, q, conc, n, pause); err != nil {
					return nil, err
				}
				*map[string]*int{queueOff: &row.SlowOff, queueOneGuard: &row.SlowOne, queueTwoGuards: &row.SlowTwo}[q] += slow
				p50[q] = append(p50[q], ms(percentile(lat[q], 50)))
				p99[q] = append(p99[q], ms(percentile(lat[q], 99)))
			}
			at := func(q string, p float64) float64 { return float64(percentile(lat[q], p)) }
			twoOne50 = append(twoOne50, at(queueTwoGuards, 50)/at(queueOneGuard, 50))
			twoOne99 = append(twoOne99, at(queueTwoGuards, 99)/at(queueOneGuard, 99))
			oneOff50 = append(oneOff50, at(queueOneGuard, 50)/at(queueOff, 50))
			oneOff99 = append(oneOff99, at(queueOneGuard, 99)/at(queueOff, 99))
			twoOff50 = append(twoOff50, at(queueTwoGuards, 50)/at(queueOff, 50))
			twoOff99 = append(twoOff99, at(queueTwoGuards, 99)/at(queueOff, 99))
		}
		row.OffP50ms, row.OffP99ms = median(p50[queueOff]), median(p99[queueOff])
		row.OneP50ms, row.OneP99ms = median(p50[queueOneGuard]), median(p99[queueOneGuard])
		row.TwoP50ms, row.TwoP99ms = median(p50[queueTwoGuards]), median(p99[queueTwoGuards])
		row.TwoVsOneP50, row.TwoVsOneP99 = median(twoOne50), median(twoOne99)
		row.OneVsOffP50, row.OneVsOffP99 = median(oneOff50), median(oneOff99)
		row.TwoVsOffP50, row.TwoVsOffP99 = median(twoOff50), median(twoOff99)
		rows = append(rows, row)
		cfg.logf("stacked guards: C=%d pause %v: off p50 %.1fms, one guard %.1fms, two guards %.1fms (two/one %.2fx)",
			conc, pause, row.OffP50ms, row.OneP50ms, row.TwoP50ms, row.TwoVsOneP50)
	}
	return rows, nil
}

package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
)

// OverheadRow compares a workflow running one no-op guarded activity, with
// plenty of tokens, against the same workflow with the interceptor off; with
// tb's default options (every grant a round trip) and with a lease.
type OverheadRow struct {
	Concurrency int `json:"concurrency"`
	// PauseMs is how long each caller waits between workflows: 0 runs them
	// back to back, which on this server settles at ~45 ms per task dispatch
	// for every mode; a pause lets each workflow meet idle pollers.
	PauseMs   float64 `json:"pauseMs"`
	Workflows int     `json:"workflowsPerRep"`
	Reps      int     `json:"reps"`
	OffP50ms  float64 `json:"offP50ms"`
	OffP99ms  float64 `json:"offP99ms"`
	OnP50ms   float64 `json:"onP50ms"`
	OnP99ms   float64 `json:"onP99ms"`
	RatioP50  float64 `json:"ratioP50"` // median over reps of on/off
	RatioP99  float64 `json:"ratioP99"`
	// The same with AcquirerOptions.Lease = overheadLease.
	LeaseP50ms    float64 `json:"leaseP50ms"`
	LeaseP99ms    float64 `json:"leaseP99ms"`
	LeaseRatioP50 float64 `json:"leaseRatioP50"`
	LeaseRatioP99 float64 `json:"leaseRatioP99"`
	// Slow* count, over the repetitions, the workflows whose result reached
	// the client more than a second after the server closed them (see runWorkflows).
	SlowOff   int `json:"slowOff"`
	SlowOn    int `json:"slowOn"`
	SlowLease int `json:"slowLease"`
}

const (
	noopActivity  = "Noop"
	noopWorkflow  = "NoopOnce"
	queueOff      = "bench-plain"
	queueOn       = "bench-guarded"
	queueLease    = "bench-leased"
	overheadLease = 32
)

func noopOnce(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 30 * time.Second})
	return workflow.ExecuteActivity(ctx, noopActivity).Get(ctx, nil)
}

func noop(context.Context) error { return nil }

func runOverhead(ctx context.Context, cfg config) ([]OverheadRow, error) {
	e, err := newEnv(ctx, true, nil)
	if err != nil {
		return nil, err
	}
	defer e.close()
	plenty := bucket.Spec{Name: "plenty", Schedule: "@yearly", Amount: 1, Maximum: bucket.MaxTokens}
	if err := e.startBucket(ctx, plenty, 0); err != nil {
		return nil, err
	}
	guards := map[string][]bucket.Guard{noopActivity: {{Bucket: plenty.Name, Cost: 1}}}
	for _, q := range []struct {
		name  string
		lease int64 // -1: no interceptor
	}{{queueOff, -1}, {queueOn, 0}, {queueLease, overheadLease}} {
		var interceptors []temporalinterceptor.WorkerInterceptor
		if q.lease >= 0 {
			limiter, err := interceptor.New(interceptor.Options{Guards: guards, AcquirerOptions: interceptor.AcquirerOptions{Lease: q.lease}})
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

	var rows []OverheadRow
	for _, c := range []struct {
		conc  int
		pause time.Duration
	}{{1, 0}, {1, 200 * time.Millisecond}, {32, 0}} {
		conc, pause := c.conc, c.pause
		n := cfg.scale(100, 300) * max(1, conc/10)
		if pause > 0 {
			n = cfg.scale(50, 150)
		}
		queues := []string{queueOff, queueOn, queueLease}
		for _, q := range queues { // warm up
			if _, _, err := runWorkflows(ctx, e.c, q, conc, 2*conc, 0); err != nil {
				return nil, err
			}
		}
		row := OverheadRow{Concurrency: conc, PauseMs: ms(pause), Workflows: n, Reps: cfg.reps}
		p50, p99 := map[string][]float64{}, map[string][]float64{}
		var r50, r99, l50, l99 []float64
		for rep := range cfg.reps {
			// Rotate which mode goes first, so drift in the machine's load favours none.
			lat := map[string][]time.Duration{}
			for k := range queues {
				q := queues[(k+rep)%len(queues)]
				var slow int
				if lat[q], slow, err = runWorkflows(ctx, e.c, q, conc, n, pause); err != nil {
					return nil, err
				}
				*map[string]*int{queueOff: &row.SlowOff, queueOn: &row.SlowOn, queueLease: &row.SlowLease}[q] += slow
				p50[q] = append(p50[q], ms(percentile(lat[q], 50)))
				p99[q] = append(p99[q], ms(percentile(lat[q], 99)))
			}
			off50, off99 := float64(percentile(lat[queueOff], 50)), float64(percentile(lat[queueOff], 99))
			r50 = append(r50, float64(percentile(lat[queueOn], 50))/off50)
			r99 = append(r99, float64(percentile(lat[queueOn], 99))/off99)
			l50 = append(l50, float64(percentile(lat[queueLease], 50))/off50)
			l99 = append(l99, float64(percentile(lat[queueLease], 99))/off99)
		}
		row.OffP50ms, row.OffP99ms = median(p50[queueOff]), median(p99[queueOff])
		row.OnP50ms, row.OnP99ms = median(p50[queueOn]), median(p99[queueOn])
		row.LeaseP50ms, row.LeaseP99ms = median(p50[queueLease]), median(p99[queueLease])
		row.RatioP50, row.RatioP99 = median(r50), median(r99)
		row.LeaseRatioP50, row.LeaseRatioP99 = median(l50), median(l99)
		rows = append(rows, row)
		cfg.logf("overhead: C=%d pause %v: off p50 %.1fms, on %.1fms (%.2fx), leased %.1fms (%.2fx)",
			conc, pause, row.OffP50ms, row.OnP50ms, row.RatioP50, row.LeaseP50ms, row.LeaseRatioP50)
	}
	return rows, nil
}

// runWorkflows runs n NoopOnce workflows on queue, conc at a time, each
// caller pausing between its workflows, and returns each one's latency: from
// the client's start call to the close the server recorded. The client's own
// wait for the result is not counted: its long poll for the close event now
// and then misses the close and returns only when the history service's long
// poll expires (history.longPollExpirationInterval, 20 s), whatever the mode;
// slow counts those.
func runWorkflows(ctx context.Context, c client.Client, queue string, conc, n int, pause time.Duration) (lat []time.Duration, slow int, err error) {
	var (
		mu   sync.Mutex
		next int
		errs = make(chan error, conc)
		wg   sync.WaitGroup
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				start := time.Now()
				run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("%s-%d-%d", queue, start.UnixNano(), i), TaskQueue: queue}, noopWorkflow)
				if err == nil {
					err = run.Get(ctx, nil)
				}
				got := time.Now()
				var desc *workflowservice.DescribeWorkflowExecutionResponse
				if err == nil {
					desc, err = c.DescribeWorkflowExecution(ctx, run.GetID(), run.GetRunID())
				}
				if err != nil {
					errs <- err
					return
				}
				closed := desc.GetWorkflowExecutionInfo().GetCloseTime().AsTime()
				mu.Lock()
				lat = append(lat, closed.Sub(start))
				if got.Sub(closed) > time.Second {
					slow++
				}
				mu.Unlock()
				time.Sleep(pause) // pacing the load, not waiting for anything
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, 0, err
	}
	return lat, slow, nil
}

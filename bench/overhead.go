package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
)

// OverheadRow compares a workflow running one no-op guarded activity, with
// plenty of tokens, against the same workflow with the interceptor off.
type OverheadRow struct {
	Concurrency int `json:"concurrency"`
	// PauseMs is how long each caller waits between workflows: 0 runs them
	// back to back, which on this server settles at ~45 ms per task dispatch
	// for both modes; a pause lets each workflow meet idle pollers.
	PauseMs   float64 `json:"pauseMs"`
	Workflows int     `json:"workflowsPerRep"`
	Reps      int     `json:"reps"`
	OffP50ms  float64 `json:"offP50ms"`
	OffP99ms  float64 `json:"offP99ms"`
	OnP50ms   float64 `json:"onP50ms"`
	OnP99ms   float64 `json:"onP99ms"`
	RatioP50  float64 `json:"ratioP50"` // median over reps of on/off
	RatioP99  float64 `json:"ratioP99"`
}

const (
	noopActivity = "Noop"
	noopWorkflow = "NoopOnce"
	queueOn      = "bench-guarded"
	queueOff     = "bench-plain"
)

func noopOnce(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 30 * time.Second})
	return workflow.ExecuteActivity(ctx, noopActivity).Get(ctx, nil)
}

func noop(context.Context) error { return nil }

func runOverhead(ctx context.Context, cfg config) ([]OverheadRow, error) {
	e, err := newEnv(ctx, true)
	if err != nil {
		return nil, err
	}
	defer e.close()
	plenty := bucket.Spec{Name: "plenty", Schedule: "@yearly", Amount: 1, Maximum: bucket.MaxTokens}
	if err := e.startBucket(ctx, plenty, 0); err != nil {
		return nil, err
	}
	limiter, err := interceptor.New(interceptor.Options{Guards: map[string]bucket.Guard{noopActivity: {Bucket: plenty.Name, Cost: 1}}})
	if err != nil {
		return nil, err
	}
	for _, q := range []struct {
		name         string
		interceptors []temporalinterceptor.WorkerInterceptor
	}{{queueOn, []temporalinterceptor.WorkerInterceptor{limiter}}, {queueOff, nil}} {
		w := worker.New(e.c, q.name, worker.Options{Interceptors: q.interceptors})
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
		if _, err := runWorkflows(ctx, e.c, queueOn, conc, 2*conc, 0); err != nil { // warm up
			return nil, err
		}
		if _, err := runWorkflows(ctx, e.c, queueOff, conc, 2*conc, 0); err != nil {
			return nil, err
		}
		row := OverheadRow{Concurrency: conc, PauseMs: ms(pause), Workflows: n, Reps: cfg.reps}
		var r50, r99, on50, on99, off50, off99 []float64
		for rep := range cfg.reps {
			// Alternate which mode goes first, so drift in the machine's load favours neither.
			order := []string{queueOn, queueOff}
			if rep%2 == 1 {
				order = []string{queueOff, queueOn}
			}
			lat := map[string][]time.Duration{}
			for _, q := range order {
				if lat[q], err = runWorkflows(ctx, e.c, q, conc, n, pause); err != nil {
					return nil, err
				}
			}
			p50on, p99on := percentile(lat[queueOn], 50), percentile(lat[queueOn], 99)
			p50off, p99off := percentile(lat[queueOff], 50), percentile(lat[queueOff], 99)
			on50, on99, off50, off99 = append(on50, ms(p50on)), append(on99, ms(p99on)), append(off50, ms(p50off)), append(off99, ms(p99off))
			r50, r99 = append(r50, float64(p50on)/float64(p50off)), append(r99, float64(p99on)/float64(p99off))
		}
		row.OnP50ms, row.OnP99ms, row.OffP50ms, row.OffP99ms = median(on50), median(on99), median(off50), median(off99)
		row.RatioP50, row.RatioP99 = median(r50), median(r99)
		rows = append(rows, row)
		cfg.logf("overhead: C=%d pause %v: on p50 %.1fms off p50 %.1fms ratio %.2f", conc, pause, row.OnP50ms, row.OffP50ms, row.RatioP50)
	}
	return rows, nil
}

// runWorkflows runs n NoopOnce workflows on queue, conc at a time, each
// caller pausing between its workflows, and returns each one's latency.
func runWorkflows(ctx context.Context, c client.Client, queue string, conc, n int, pause time.Duration) ([]time.Duration, error) {
	var (
		mu   sync.Mutex
		lat  []time.Duration
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
				if err != nil {
					errs <- err
					return
				}
				d := time.Since(start)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
				time.Sleep(pause) // pacing the load, not waiting for anything
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return lat, nil
}

package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// CANResult is 64 callers acquiring while the bucket continues as new
// every MaxUpdatesPerRun updates.
type CANResult struct {
	Callers          int     `json:"callers"`
	MaxUpdatesPerRun int     `json:"maxUpdatesPerRun"`
	Seconds          float64 `json:"seconds"`
	Boundaries       int     `json:"boundaries"` // continue-as-new boundaries crossed
	Acquires         int     `json:"acquires"`
	Errors           int     `json:"errors"` // errors surfaced to callers
	GrantedTokens    int64   `json:"grantedTokens"`
	DeductedTokens   int64   `json:"deductedTokens"` // initial minus what the bucket holds at the end
	BucketGranted    int64   `json:"bucketGranted"`  // what the bucket counts as granted
	P50ms            float64 `json:"p50ms"`
	P99ms            float64 `json:"p99ms"`
	// Spanning counts the acquires in flight when a run ended, and
	// BoundaryP50ms / BoundaryP99ms their latency; AwayP99ms is the p99 of the rest.
	Spanning      int     `json:"spanning"`
	BoundaryP50ms float64 `json:"boundaryP50ms"`
	BoundaryP99ms float64 `json:"boundaryP99ms"`
	AwayP99ms     float64 `json:"awayP99ms"`
}

func runCAN(ctx context.Context, cfg config) (*CANResult, error) {
	const (
		processes = 4
		perProc   = 16
		maxTokens = bucket.MaxTokens
	)
	e, err := newEnv(ctx, true, nil)
	if err != nil {
		return nil, err
	}
	defer e.close()
	spec := bucket.Spec{Name: "can", Schedule: "@yearly", Amount: 1, Maximum: maxTokens}
	res := &CANResult{Callers: processes * perProc, MaxUpdatesPerRun: cfg.scale(100, 300)}
	if err := e.startBucket(ctx, spec, res.MaxUpdatesPerRun); err != nil {
		return nil, err
	}
	dur := time.Duration(cfg.scale(5, 20)) * time.Second

	type sample struct {
		start, end time.Time
	}
	var (
		mu      sync.Mutex
		samples []sample
		wg      sync.WaitGroup
	)
	runCtx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	begin := time.Now()
	for p := range processes {
		c, err := e.newClient()
		if err != nil {
			return nil, err
		}
		acq, err := interceptor.NewAcquirer(c, interceptor.AcquirerOptions{})
		if err != nil {
			return nil, err
		}
		for i := range perProc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; runCtx.Err() == nil; n++ {
					start := time.Now()
					d, err := acq.Acquire(ctx, spec.Name, fmt.Sprintf("p%d-c%d-%d", p, i, n), 1)
					end := time.Now()
					mu.Lock()
					res.Acquires++
					switch {
					case err != nil:
						res.Errors++
					case d.Granted:
						res.GrantedTokens++
						samples = append(samples, sample{start, end})
					default:
						res.Errors++ // a denial with this many tokens is a fault
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	res.Seconds = time.Since(begin).Seconds()

	st, err := e.state(ctx, spec.Name)
	if err != nil {
		return nil, err
	}
	res.BucketGranted, res.DeductedTokens = st.Granted, maxTokens-st.Tokens
	boundaries, err := runEnds(ctx, e, spec.Name, st.Run)
	if err != nil {
		return nil, err
	}
	res.Boundaries = len(boundaries)
	var all, spanning, away []time.Duration
	for _, s := range samples {
		d := s.end.Sub(s.start)
		all = append(all, d)
		if slices.ContainsFunc(boundaries, func(b time.Time) bool { return s.start.Before(b) && s.end.After(b) }) {
			spanning = append(spanning, d)
		} else {
			away = append(away, d)
		}
	}
	res.Spanning = len(spanning)
	res.P50ms, res.P99ms = ms(percentile(all, 50)), ms(percentile(all, 99))
	res.BoundaryP50ms, res.BoundaryP99ms, res.AwayP99ms = ms(percentile(spanning, 50)), ms(percentile(spanning, 99)), ms(percentile(away, 99))
	cfg.logf("continue-as-new: %d boundaries, %d grants, %d deducted, %d errors, p99 %.1fms; %d acquires spanning a boundary: p50 %.1fms p99 %.1fms; the rest p99 %.1fms",
		res.Boundaries, res.GrantedTokens, res.DeductedTokens, res.Errors, res.P99ms, res.Spanning, res.BoundaryP50ms, res.BoundaryP99ms, res.AwayP99ms)
	return res, nil
}

// runEnds returns when each of the bucket's closed runs ended, once
// visibility lists all runs earlier runs.
func runEnds(ctx context.Context, e *env, name string, runs int) ([]time.Time, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := e.c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			PageSize: 1000,
			Query:    fmt.Sprintf("WorkflowId = '%s' AND ExecutionStatus = 'ContinuedAsNew'", workflows.BucketID(name)),
		})
		if err != nil {
			return nil, err
		}
		var ends []time.Time
		for _, x := range resp.Executions {
			ends = append(ends, x.GetCloseTime().AsTime())
		}
		if len(ends) >= runs || time.Now().After(deadline) {
			return ends, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

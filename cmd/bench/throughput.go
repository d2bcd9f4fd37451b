package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// ThroughputRow is one bucket's grant rate with C callers spread over P
// processes calling the acquirer directly, with plenty of tokens.
type ThroughputRow struct {
	Processes int    `json:"processes"`
	Callers   int    `json:"callers"`
	Mode      string `json:"mode"` // "batched" (tb) or "unbatched" (one update per call)
	// GrantsPerSec is the median of the per-second grant counts, and
	// MeanGrantsPerSec all grants over the measured time.
	GrantsPerSec      float64 `json:"grantsPerSec"`
	MeanGrantsPerSec  float64 `json:"meanGrantsPerSec"`
	P50ms             float64 `json:"p50ms"`
	P99ms             float64 `json:"p99ms"`
	Errors            int     `json:"errors"`
	ResourceExhausted int64   `json:"resourceExhausted"`
	// VsUnbatched is, on batched rows, MeanGrantsPerSec over the unbatched
	// row's at the same P and C; 0 when one-update-per-call granted nothing.
	VsUnbatched float64 `json:"vsUnbatched,omitempty"`
}

func runThroughput(ctx context.Context, cfg config) ([]ThroughputRow, error) {
	dur := time.Duration(cfg.scale(3, 10)) * time.Second
	var rows []ThroughputRow
	for _, procs := range []int{1, 4} {
		for _, callers := range []int{1, 8, 32, 128, 512} {
			pair, err := throughputPair(ctx, procs, callers, dur)
			if err != nil {
				return nil, err
			}
			for _, row := range pair {
				cfg.logf("throughput: P=%d C=%d %s: %.0f grants/s, p99 %.1fms, %d errors, %d ResourceExhausted",
					procs, callers, row.Mode, row.GrantsPerSec, row.P99ms, row.Errors, row.ResourceExhausted)
			}
			rows = append(rows, pair...)
		}
	}
	return rows, nil
}

// throughputPair measures one-update-per-call and tb's batching at the same
// P and C, on a server of their own: a storm of updates can starve the
// namespace's long polls, the tb worker's own included, for a while after
// its callers stop, and must not leak into the next measurement. Batching
// goes first for the same reason.
func throughputPair(ctx context.Context, procs, callers int, dur time.Duration) ([]ThroughputRow, error) {
	e, err := newEnv(ctx, true, nil)
	if err != nil {
		return nil, err
	}
	defer e.close()
	spec := bucket.Spec{Name: "throughput", Schedule: "@yearly", Amount: 1, Maximum: bucket.MaxTokens}
	if err := e.startBucket(ctx, spec, 0); err != nil {
		return nil, err
	}
	clients := make([]client.Client, min(procs, callers))
	for i := range clients {
		if clients[i], err = e.newClient(); err != nil {
			return nil, err
		}
	}
	batched, err := throughputCell(ctx, e, clients, callers, false, spec.Name, 0, dur)
	if err != nil {
		return nil, err
	}
	unbatched, err := throughputCell(ctx, e, clients, callers, true, spec.Name, 1, dur)
	if err != nil {
		return nil, err
	}
	batched.Processes, batched.Mode = procs, "batched"
	unbatched.Processes, unbatched.Mode = procs, "unbatched"
	if unbatched.MeanGrantsPerSec > 0 {
		batched.VsUnbatched = batched.MeanGrantsPerSec / unbatched.MeanGrantsPerSec
	}
	return []ThroughputRow{unbatched, batched}, nil
}

// throughputCell runs callers goroutines, spread over one acquirer per
// client, each acquiring one token after another for dur after a warm-up.
func throughputCell(ctx context.Context, e *env, clients []client.Client, callers int, unbatched bool, name string, cell int, dur time.Duration) (ThroughputRow, error) {
	const warmup = 500 * time.Millisecond
	acquirers := make([]interceptor.Limiter, len(clients))
	for i, c := range clients {
		if unbatched {
			acquirers[i] = perCall{c}
			continue
		}
		var err error
		if acquirers[i], err = interceptor.NewAcquirer(c, interceptor.AcquirerOptions{}); err != nil {
			return ThroughputRow{}, err
		}
	}
	exhaustedBefore := e.resourceExhausted.Load()
	begin := time.Now()
	measureFrom, end := begin.Add(warmup), begin.Add(warmup+dur)
	runCtx, cancel := context.WithDeadline(ctx, end)
	defer cancel()

	var (
		mu       sync.Mutex
		lat      []time.Duration
		perSec   = make([]float64, int(dur/time.Second))
		failures int
		wg       sync.WaitGroup
	)
	for i := range callers {
		acq := acquirers[i%len(acquirers)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; runCtx.Err() == nil; n++ {
				start := time.Now()
				d, err := acq.Acquire(runCtx, name, fmt.Sprintf("c%d-%d-%d", cell, i, n), 1)
				done := time.Now()
				if done.After(end) || start.Before(measureFrom) {
					continue
				}
				mu.Lock()
				switch {
				case err != nil && !errors.Is(err, context.DeadlineExceeded):
					failures++
				case err == nil && d.Granted:
					lat = append(lat, done.Sub(start))
					if s := int(done.Sub(measureFrom) / time.Second); s < len(perSec) {
						perSec[s]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ThroughputRow{
		Callers:           callers,
		GrantsPerSec:      median(perSec),
		MeanGrantsPerSec:  float64(len(lat)) / dur.Seconds(),
		P50ms:             ms(percentile(lat, 50)),
		P99ms:             ms(percentile(lat, 99)),
		Errors:            failures,
		ResourceExhausted: e.resourceExhausted.Load() - exhaustedBefore,
	}, nil
}

// perCall is what a naive limiter does: one acquire update per call, with no
// limit on updates in flight, each with the SDK's retries for 10 s.
type perCall struct{ c client.Client }

func (p perCall) Acquire(ctx context.Context, name, id string, cost int64) (interceptor.Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, interceptor.DefaultAcquireTimeout)
	defer cancel()
	h, err := p.c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID:   workflows.BucketID(name),
		UpdateName:   workflows.AcquireUpdate,
		Args:         []any{workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: id, Cost: cost}}}},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	var resp workflows.AcquireResponse
	if err == nil {
		err = h.Get(ctx, &resp)
	}
	if d, ok := interceptor.AsDenial(err); ok {
		return interceptor.Decision{Remaining: d.Remaining, RetryAfter: d.RetryAfter, NextRefill: d.NextRefill}, nil
	}
	if err != nil {
		return interceptor.Decision{}, err
	}
	if len(resp.Results) != 1 {
		return interceptor.Decision{}, fmt.Errorf("bucket %q answered %d results for 1 request", name, len(resp.Results))
	}
	r := resp.Results[0]
	return interceptor.Decision{Granted: r.Granted, Remaining: resp.Tokens, RetryAfter: r.RetryAfter, NextRefill: resp.NextRefill, LastRefill: resp.LastRefill}, nil
}

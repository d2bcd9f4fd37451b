package main

import (
	"context"
	"fmt"
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
	var lims []interceptor.Limiter
	if unbatched {
		for _, c := range clients {
			lims = append(lims, perCall{c})
		}
	} else {
		var err error
		if lims, err = acquirers(clients); err != nil {
			return ThroughputRow{}, err
		}
	}
	r := loadCell(ctx, e, lims, callers, fmt.Sprintf("c%d", cell), dur, func(ctx context.Context, lim interceptor.Limiter, _ int, id string) (bool, error) {
		d, err := lim.Acquire(ctx, name, id, 1)
		return d.Granted, err
	})
	return ThroughputRow{
		Callers:           callers,
		GrantsPerSec:      r.GrantsPerSec,
		MeanGrantsPerSec:  r.MeanGrantsPerSec,
		P50ms:             r.P50ms,
		P99ms:             r.P99ms,
		Errors:            r.Errors,
		ResourceExhausted: r.ResourceExhausted,
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

package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// perProcess reproduces, for comparison, the Acquirer of tb at commit bfde991
// (default options): per bucket at most one acquire update in flight from
// this process, every caller that arrives meanwhile carried in the next one,
// each update sent under one update ID in 2 s tries within a 10 s timeout. It
// has no leases, refuses nothing locally and spreads nothing: it keeps its
// update in flight with no regard for the other processes on the bucket.
type perProcess struct {
	c      client.Client
	mu     sync.Mutex
	queues map[string]*ppQueue // by bucket name
}

type ppQueue struct {
	pending  []*ppCall
	inFlight bool
	rejected int64 // tokens the validator refused, reported in the next batch
}

type ppCall struct {
	req  workflows.AcquireRequest
	done chan ppOutcome // buffered
}

type ppOutcome struct {
	d   interceptor.Decision
	err error
}

const ppAttempt = 2 * time.Second // one try of an update

func newPerProcess(c client.Client) *perProcess {
	return &perProcess{c: c, queues: map[string]*ppQueue{}}
}

func (p *perProcess) Acquire(ctx context.Context, name, id string, cost int64) (interceptor.Decision, error) {
	c := &ppCall{req: workflows.AcquireRequest{ID: id, Cost: cost}, done: make(chan ppOutcome, 1)}
	p.mu.Lock()
	q := p.queues[name]
	if q == nil {
		q = &ppQueue{}
		p.queues[name] = q
	}
	q.pending = append(q.pending, c)
	start := !q.inFlight
	q.inFlight = true
	p.mu.Unlock()
	if start {
		go p.drain(name, q)
	}
	select {
	case o := <-c.done:
		return o.d, o.err
	case <-ctx.Done():
		p.mu.Lock()
		for i, pc := range q.pending {
			if pc == c {
				q.pending = append(q.pending[:i], q.pending[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		return interceptor.Decision{}, ctx.Err()
	}
}

// drain sends batches for one bucket until no caller waits.
func (p *perProcess) drain(name string, q *ppQueue) {
	for {
		p.mu.Lock()
		n := min(len(q.pending), workflows.MaxBatch)
		if n == 0 {
			q.inFlight = false
			p.mu.Unlock()
			return
		}
		batch := q.pending[:n:n]
		q.pending = append([]*ppCall(nil), q.pending[n:]...)
		rejected := q.rejected
		q.rejected = 0
		p.mu.Unlock()
		unreported := p.send(name, batch, rejected)
		p.mu.Lock()
		q.rejected += unreported
		p.mu.Unlock()
	}
}

// send sends one update and answers every call in it; it returns the
// refused tokens still to report.
func (p *perProcess) send(name string, batch []*ppCall, rejected int64) (unreported int64) {
	reqs := make([]workflows.AcquireRequest, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
	}
	resp, err := p.update(name, workflows.AcquireBatch{Requests: reqs, Rejected: rejected})
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.Type() == workflows.ErrRateLimited && appErr.HasDetails() && appErr.Details(&resp) == nil {
		err, unreported = nil, rejected // the validator refused the batch: a denial for all
		for _, c := range batch {
			unreported += c.req.Cost
		}
	} else if err != nil {
		unreported = rejected
		err = fmt.Errorf("bucket %q: acquire failed: %w", name, err)
	}
	for i, c := range batch {
		d := interceptor.Decision{Remaining: resp.Tokens, NextRefill: resp.NextRefill, LastRefill: resp.LastRefill}
		switch {
		case err != nil:
			c.done <- ppOutcome{err: err}
		case i < len(resp.Results) && resp.Results[i].Invalid != "":
			c.done <- ppOutcome{err: fmt.Errorf("bucket %q: %s", name, resp.Results[i].Invalid)}
		default:
			if i < len(resp.Results) {
				d.Granted, d.RetryAfter = resp.Results[i].Granted, resp.Results[i].RetryAfter
			}
			c.done <- ppOutcome{d: d}
		}
	}
	return unreported
}

// update runs the acquire update, with the SDK's retries, within the
// acquirer's default timeout, in tries of ppAttempt under one update ID.
func (p *perProcess) update(name string, batch workflows.AcquireBatch) (workflows.AcquireResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), interceptor.DefaultAcquireTimeout)
	defer cancel()
	opts := client.UpdateWorkflowOptions{
		UpdateID:     fmt.Sprintf("pp-%016x%016x", rand.Uint64(), rand.Uint64()),
		WorkflowID:   workflows.BucketID(name),
		UpdateName:   workflows.AcquireUpdate,
		Args:         []any{batch},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	}
	for {
		var resp workflows.AcquireResponse
		tryCtx, cancelTry := context.WithTimeout(ctx, ppAttempt)
		h, err := p.c.UpdateWorkflow(tryCtx, opts)
		if err == nil {
			err = h.Get(tryCtx, &resp)
		}
		expired := err != nil && tryCtx.Err() != nil
		cancelTry()
		if !expired || ctx.Err() != nil {
			return resp, err
		}
	}
}

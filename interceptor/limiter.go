package interceptor

import (
	"context"
	"errors"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/workflows"
)

// A Limiter decides whether a guarded activity may run. The interceptor asks
// it before every guarded activity; *Acquirer, which asks tb's bucket
// workflows, is the one production uses, and tbtest.Limiter keeps buckets in
// memory for tests that run without a Temporal server.
type Limiter interface {
	// Acquire asks the named bucket for cost tokens. id names the request: a
	// caller asking again with an id already granted gets the grant again
	// without taking more tokens. A denial is a Decision with Granted false,
	// not an error; an error means the request could not be decided (bad
	// input, an unknown bucket, Temporal unreachable, ctx done), and the
	// guarded activity does not run.
	Acquire(ctx context.Context, bucket, id string, cost int64) (Decision, error)
}

// A Decision is a bucket's answer to one request.
type Decision struct {
	// Granted reports whether the tokens were taken.
	Granted bool
	// Remaining is the number of tokens the bucket held once it decided.
	Remaining int64
	// RetryAfter is, when not granted, how long until the bucket expects to
	// hold the tokens, counting the requests ahead of this one. Zero when granted.
	RetryAfter time.Duration
	// NextRefill is when the bucket expects its next refill.
	NextRefill time.Time
	// LastRefill is when the bucket applied its latest refill before it
	// decided: grants with the same LastRefill drew on the same refill.
	LastRefill time.Time
	// Shadow reports a grant made only because the bucket is in shadow
	// mode: enforcing, it would have refused the request.
	Shadow bool
}

// A Grant is the tokens a running guarded activity holds; GrantFromContext
// returns it.
type Grant struct {
	// Bucket the tokens came from, and Cost, how many.
	Bucket string
	Cost   int64
	// Key is, for a keyed bucket, the key whose tokens they were.
	Key string
	// Remaining is the number of tokens the bucket held after the grant.
	Remaining int64
	// NextRefill is when the bucket expects its next refill.
	NextRefill time.Time
	// LastRefill is when the bucket applied the latest refill before the
	// grant; grants with the same LastRefill drew on the same refill.
	LastRefill time.Time
	// Shadow reports that the bucket, in shadow mode, would have refused.
	Shadow bool
}

type grantKey struct{}

// GrantFromContext returns the grant of the running guarded activity: of its
// first bucket, when it draws from several (see GrantsFromContext).
func GrantFromContext(ctx context.Context) (Grant, bool) {
	gs := GrantsFromContext(ctx)
	if len(gs) == 0 {
		return Grant{}, false
	}
	return gs[0], true
}

// GrantsFromContext returns the grants of the running guarded activity, one
// per bucket it draws from, in bucket order.
func GrantsFromContext(ctx context.Context) []Grant {
	h, ok := ctx.Value(grantKey{}).(*held)
	if !ok {
		return nil
	}
	return slices.Clone(h.grants)
}

// A Settler is a Limiter that can also settle a grant after the fact:
// tokens < 0 gives tokens of the grant named by id back (the activity did not
// run, or used fewer), tokens > 0 charges more (it used more). *Acquirer and
// tbtest.Limiter are Settlers; the interceptor settles through one when an
// activity that draws from several buckets is denied by one, and after
// SetCost.
type Settler interface {
	Settle(ctx context.Context, bucket, id string, tokens int64) error
}

// A Denial says why a guarded activity did not run: which bucket refused it,
// what that bucket held, and when to try again. It is the detail of the
// RateLimited error a denied activity fails with; AsDenial reads it.
type Denial struct {
	// Bucket that refused the request.
	Bucket string `json:"bucket"`
	// Key is, for a keyed bucket, the key that had too few tokens.
	Key string `json:"key,omitempty"`
	// Cost is the tokens the request asked for (0 when the denial came from
	// the bucket itself, which answers for a whole batch).
	Cost int64 `json:"cost,omitempty"`
	// Remaining is the number of tokens the bucket held when it refused.
	Remaining int64 `json:"tokens"`
	// RetryAfter is how long until the bucket expects to hold the tokens.
	RetryAfter time.Duration `json:"retryAfter"`
	// NextRefill is when the bucket expects its next refill.
	NextRefill time.Time `json:"nextRefill,omitzero"`
	// Also holds the other buckets that denied the same activity, when it
	// draws from several; RetryAfter is then the longest of the waits.
	Also []Denial `json:"also,omitempty"`
}

// ErrClosed is the error of an Acquire on an Acquirer (or an Interceptor)
// that has been closed: the caller's activity fails with a retryable error
// and runs again on a worker that is not stopping.
var ErrClosed = errors.New("interceptor: the acquirer is closed")

// AsDenial reports whether err is, or wraps, tb's RateLimited error, and
// returns its details: from a guarded activity's failure as a workflow sees
// it (a *temporal.ActivityError), from the interceptor's error itself, or
// from a bucket workflow's acquire validator. It reports false for any other
// error, and for a RateLimited error whose details are not tb's.
func AsDenial(err error) (Denial, bool) {
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrRateLimited || !appErr.HasDetails() {
		return Denial{}, false
	}
	// The interceptor's detail is a Denial; the validator's an AcquireResponse.
	// Details that came through Temporal are JSON: one struct reads the fields
	// of either. Details of an error made in this process are Go values.
	var d struct {
		Bucket     string              `json:"bucket"`
		Cost       int64               `json:"cost"`
		Tokens     int64               `json:"tokens"`
		RetryAfter time.Duration       `json:"retryAfter"`
		NextRefill time.Time           `json:"nextRefill"`
		Also       []Denial            `json:"also"`
		Results    []workflows.Outcome `json:"results"`
	}
	var den Denial
	var resp workflows.AcquireResponse
	switch {
	case details(appErr, &d) && d.Bucket != "":
		den = Denial{Bucket: d.Bucket, Cost: d.Cost, Remaining: d.Tokens, RetryAfter: d.RetryAfter, NextRefill: d.NextRefill, Also: d.Also}
		if len(d.Results) > 0 {
			den.RetryAfter = d.Results[0].RetryAfter
		}
	case details(appErr, &den) && den.Bucket != "":
	case details(appErr, &resp) && resp.Bucket != "":
		den = Denial{Bucket: resp.Bucket, Remaining: resp.Tokens, NextRefill: resp.NextRefill}
		if len(resp.Results) > 0 {
			den.RetryAfter = resp.Results[0].RetryAfter
		}
	default:
		return Denial{}, false
	}
	return den, true
}

// details decodes an ApplicationError's first detail into v, reporting
// whether it could: the SDK panics when a detail made in this process is a
// Go value of another type than v.
func details(e *temporal.ApplicationError, v any) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return e.Details(v) == nil
}

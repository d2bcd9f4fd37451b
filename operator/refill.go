package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/workflows"
)

// refillWait is RefillOptions.Wait's default, and refillPoll how often
// Refill asks the bucket whether it has applied the refill.
const (
	refillWait = 5 * time.Second
	refillPoll = 50 * time.Millisecond
)

// RefillOptions configure Refill. The zero value is ready to use.
type RefillOptions struct {
	// Amount is how many tokens to add; the bucket holds at most its maximum
	// whatever it is given. Default 0: the bucket's amount, as a tick adds.
	// A negative amount is refused.
	Amount int64
	// Wait bounds how long Refill waits for the bucket to answer before it
	// sends the refill, and again for the bucket to apply it. Default 5s.
	Wait time.Duration
}

// NotAppliedError reports a refill that Refill sent but had not seen applied
// when it stopped waiting: no worker runs the bucket, or none did in time.
// The bucket applies it once a worker takes it up, so calling Refill again
// would add the tokens twice.
type NotAppliedError struct {
	// Bucket is the bucket's name.
	Bucket string
	// Err says why: a *NoAnswerError when the bucket did not answer before
	// the refill was sent, else the error that ended the wait (the deadline
	// of RefillOptions.Wait, or ctx's).
	Err error
}

func (e *NotAppliedError) Error() string {
	return fmt.Sprintf("bucket %q: refill sent, but the bucket has not applied it yet: is a tb worker running?", e.Bucket)
}

// Unwrap returns why the refill was not seen applied.
func (e *NotAppliedError) Unwrap() error { return e.Err }

// Refill adds tokens to the named bucket now, outside its Schedule, as
// tb refill does, and waits until the bucket has applied them. It returns
// the bucket's state before and after the refill.
//
// A refill never starts a bucket: one that is not running gets nothing and
// is reported as a *NotRunningError. A bucket that does not answer (no worker
// runs it) is still sent the refill, which it applies once a worker runs it;
// Refill then returns a *NotAppliedError wrapping the *NoAnswerError, and it
// returns one too when the bucket has not applied the refill within
// RefillOptions.Wait. Either way the refill is on its way: do not send it
// again. Every other error means nothing was sent, or says it.
//
// The refill counts as applied when the bucket's LastRefill moves past the
// one it had before, so a scheduled refill the bucket applies meanwhile may
// end the wait first; after then holds both.
func Refill(ctx context.Context, c client.Client, name string, opts RefillOptions) (before, after workflows.Status, err error) {
	if c == nil {
		return before, after, fmt.Errorf("bucket %q: %w", name, errNoClient)
	}
	if opts.Amount < 0 {
		return before, after, fmt.Errorf("bucket %q: the refill amount must be positive, or 0 for the bucket's amount; got %d", name, opts.Amount)
	}
	if opts.Wait <= 0 {
		opts.Wait = refillWait
	}

	return refill(ctx, c, name, workflows.BucketID(name), workflows.Refill{ID: "manual-" + uuid.NewString(), Amount: opts.Amount}, opts)
}

// refill sends sig to workflow id of the named bucket and waits, as Refill
// says, for its LastRefill to move.
func refill(ctx context.Context, c client.Client, name, id string, sig workflows.Refill, opts RefillOptions) (before, after workflows.Status, err error) {
	qctx, cancel := context.WithTimeout(ctx, opts.Wait)
	before, err = query(qctx, c, name, id)
	if none := (*NotRunningError)(nil); errors.As(err, &none) && none.Status == enumspb.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED && sig.Key == "" {
		if _, kerr := query(qctx, c, name, workflows.ShardID(name, 0)); kerr == nil {
			err = fmt.Errorf("bucket %q is keyed: refill one of its keys (RefillKey, or tb refill %s --key KEY)", name, name)
		}
	}
	cancel()
	var noAnswer *NoAnswerError
	if err != nil && !errors.As(err, &noAnswer) {
		return workflows.Status{}, after, err
	}
	if serr := c.SignalWorkflow(ctx, id, "", workflows.RefillSignal, sig); serr != nil {
		var notFound *serviceerror.NotFound
		if errors.As(serr, &notFound) { // it closed since it was read
			return before, after, notRunning(ctx, c, name, id, enumspb.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED)
		}
		return before, after, fmt.Errorf("bucket %q: sending the refill: %w", name, serr)
	}
	if noAnswer != nil {
		return before, after, &NotAppliedError{Bucket: name, Err: noAnswer}
	}

	wctx, cancel := context.WithTimeout(ctx, opts.Wait)
	defer cancel()
	tick := time.NewTicker(refillPoll)
	defer tick.Stop()
	for {
		st, err := query(wctx, c, name, id)
		var notRunning *NotRunningError
		switch {
		case err == nil && st.LastRefill.After(before.LastRefill):
			return before, st, nil
		case errors.As(err, &notRunning): // retired or ended meanwhile
			return before, after, err
		}
		select {
		case <-wctx.Done():
			return before, after, &NotAppliedError{Bucket: name, Err: wctx.Err()}
		case <-tick.C:
		}
	}
}

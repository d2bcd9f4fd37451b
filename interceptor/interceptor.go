// Package interceptor rate-limits activities across every Temporal worker: a
// worker interceptor takes tokens from tb's bucket workflows before a guarded
// activity runs, through a per-process Acquirer that batches concurrent callers.
package interceptor

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// Defaults for Options.
const (
	DefaultMaxWait   = 2 * time.Second
	DefaultMaxJitter = time.Minute
)

// minRetryDelay keeps NextRetryDelay positive: zero would mean "use the retry policy".
const minRetryDelay = 10 * time.Millisecond

// Options configure the interceptor. Every field but Guards has a default.
type Options struct {
	// Guards maps an activity type to the bucket it draws from and the tokens
	// one run takes. Activity types not listed run unguarded. Required; use a
	// loaded buckets.yaml's Config.Guards, or build it in Go.
	Guards map[string]bucket.Guard
	// Limiter takes the tokens. Default: one *Acquirer per Temporal client,
	// made on first use from the worker's client with AcquirerOptions, and
	// closed by Close. Tests give a tbtest.Limiter; the interceptor never
	// closes a Limiter it was given.
	Limiter Limiter
	// AcquirerOptions configure the default Acquirers.
	AcquirerOptions AcquirerOptions
	// MaxWait: a denial whose tokens are expected within MaxWait (and before
	// the activity's deadline) is waited out inside the activity, which costs
	// no attempt. Default DefaultMaxWait; negative never waits.
	MaxWait time.Duration
	// MaxJitter bounds the random delay added to NextRetryDelay, so a backlog
	// spreads instead of arriving at the refill at once. The jitter is uniform
	// in [0, min(MaxJitter, retry-after/10)). Default DefaultMaxJitter; negative disables it.
	MaxJitter time.Duration
}

// Interceptor is a worker interceptor; add it to worker.Options.Interceptors.
// Register one Interceptor on every worker of a process so they share its
// Acquirer, and Close it once those workers have stopped.
type Interceptor struct {
	temporalinterceptor.WorkerInterceptorBase
	opts Options

	mu        sync.Mutex
	acquirers map[client.Client]*Acquirer
	closed    bool
	warned    sync.Map // activity type → struct{}: retry-policy warning logged
}

var _ temporalinterceptor.WorkerInterceptor = (*Interceptor)(nil)

// New returns an interceptor guarding the activities in opts.Guards.
func New(opts Options) (*Interceptor, error) {
	if len(opts.Guards) == 0 {
		return nil, errors.New("interceptor: Options.Guards names no activity")
	}
	for name, g := range opts.Guards {
		if err := bucket.CheckName(g.Bucket); err != nil {
			return nil, fmt.Errorf("interceptor: activity %q: bucket name %w", name, err)
		}
		if g.Cost <= 0 {
			return nil, fmt.Errorf("interceptor: activity %q: cost must be greater than 0, got %d", name, g.Cost)
		}
	}
	if opts.MaxWait == 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.MaxJitter == 0 {
		opts.MaxJitter = DefaultMaxJitter
	}
	if err := opts.AcquirerOptions.setDefaults(); err != nil {
		return nil, err
	}
	return &Interceptor{opts: opts, acquirers: map[client.Client]*Acquirer{}}, nil
}

// FromFile returns an interceptor guarding the activities listed in a buckets.yaml file.
func FromFile(path string, opts Options) (*Interceptor, error) {
	cfg, err := bucket.Load(path)
	if err != nil {
		return nil, err
	}
	opts.Guards = cfg.Guards
	return New(opts)
}

// Guarded returns the bucket and cost guarding an activity type.
func (i *Interceptor) Guarded(activityType string) (bucket.Guard, bool) {
	g, ok := i.opts.Guards[activityType]
	return g, ok
}

// InterceptActivity implements WorkerInterceptor.
func (i *Interceptor) InterceptActivity(ctx context.Context, next temporalinterceptor.ActivityInboundInterceptor) temporalinterceptor.ActivityInboundInterceptor {
	return &activityInbound{ActivityInboundInterceptorBase: temporalinterceptor.ActivityInboundInterceptorBase{Next: next}, i: i}
}

type activityInbound struct {
	temporalinterceptor.ActivityInboundInterceptorBase
	i *Interceptor
}

func (a *activityInbound) ExecuteActivity(ctx context.Context, in *temporalinterceptor.ExecuteActivityInput) (any, error) {
	info := activity.GetInfo(ctx)
	g, ok := a.i.Guarded(info.ActivityType.Name)
	if !ok {
		return a.Next.ExecuteActivity(ctx, in)
	}
	grant, err := a.i.take(ctx, info, g)
	if err != nil {
		return nil, err
	}
	return a.Next.ExecuteActivity(context.WithValue(ctx, grantKey{}, grant), in)
}

// take returns once the activity holds its tokens, or with the error the activity should fail with.
func (i *Interceptor) take(ctx context.Context, info activity.Info, g bucket.Guard) (Grant, error) {
	i.warnRetryPolicy(ctx, info, g)
	lim, err := i.limiter(ctx)
	if err != nil {
		return Grant{}, err
	}
	id := requestID(info)
	for {
		d, err := lim.Acquire(ctx, g.Bucket, id, g.Cost)
		if err != nil {
			return Grant{}, err
		}
		if d.Granted {
			return Grant{Bucket: g.Bucket, Cost: g.Cost, Remaining: d.Remaining, NextRefill: d.NextRefill, LastRefill: d.LastRefill}, nil
		}
		if !i.wait(ctx, info, d.RetryAfter) {
			return Grant{}, i.rateLimited(g, d)
		}
	}
}

// wait sleeps through a short denial inside the activity and reports whether it did.
func (i *Interceptor) wait(ctx context.Context, info activity.Info, d time.Duration) bool {
	if d > i.opts.MaxWait {
		return false
	}
	// Leave the activity its own time to run after the wait.
	if !info.Deadline.IsZero() && time.Until(info.Deadline) < 2*d+time.Second {
		return false
	}
	// Heartbeat while waiting, unless a previous attempt's heartbeat details
	// must be kept for the activity: then wait only within the heartbeat timeout.
	beat := info.HeartbeatTimeout / 2
	if beat > 0 && activity.HasHeartbeatDetails(ctx) {
		if d >= beat {
			return false
		}
		beat = 0
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	var tick <-chan time.Time
	if beat > 0 {
		t := time.NewTicker(beat)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-timer.C:
			return true
		case <-tick:
			activity.RecordHeartbeat(ctx)
		case <-ctx.Done():
			return false
		}
	}
}

// rateLimited is the error a denied activity fails with: retryable, with
// NextRetryDelay set to when tokens are expected, plus jitter.
func (i *Interceptor) rateLimited(g bucket.Guard, d Decision) error {
	delay := max(d.RetryAfter, minRetryDelay)
	if spread := min(i.opts.MaxJitter, d.RetryAfter/10); spread > 0 {
		delay += rand.N(spread)
	}
	return temporal.NewApplicationErrorWithOptions(
		fmt.Sprintf("rate limited by bucket %q: %d tokens left, %d needed; retrying in %v",
			g.Bucket, d.Remaining, g.Cost, delay.Round(time.Millisecond)),
		workflows.ErrRateLimited,
		temporal.ApplicationErrorOptions{
			NextRetryDelay: delay,
			Category:       temporal.ApplicationErrorCategoryBenign,
			Details:        []any{Denial{Bucket: g.Bucket, Cost: g.Cost, Remaining: d.Remaining, RetryAfter: d.RetryAfter, NextRefill: d.NextRefill}},
		})
}

// limiter returns the Limiter of the options, or the Acquirer for the worker's client.
func (i *Interceptor) limiter(ctx context.Context) (Limiter, error) {
	if i.opts.Limiter != nil {
		return i.opts.Limiter, nil
	}
	c := activity.GetClient(ctx)
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil, ErrClosed
	}
	a := i.acquirers[c]
	if a == nil {
		a, _ = NewAcquirer(c, i.opts.AcquirerOptions) // options were checked in New
		i.acquirers[c] = a
	}
	return a, nil
}

// Close closes the Acquirers the interceptor made (see Acquirer.Close):
// call it once the workers it is registered on have stopped. A Limiter given
// in Options is left to its owner. Guarded activities that start afterwards
// fail with a retryable ErrClosed.
func (i *Interceptor) Close(ctx context.Context) error {
	i.mu.Lock()
	i.closed = true
	acquirers := make([]*Acquirer, 0, len(i.acquirers))
	for _, a := range i.acquirers {
		acquirers = append(acquirers, a)
	}
	i.mu.Unlock()
	var errs []error
	for _, a := range acquirers {
		errs = append(errs, a.Close(ctx))
	}
	return errors.Join(errs...)
}

// warnRetryPolicy logs, once per activity type, when denials can use up the activity's attempts.
func (i *Interceptor) warnRetryPolicy(ctx context.Context, info activity.Info, g bucket.Guard) {
	rp := info.RetryPolicy
	if rp == nil || rp.MaximumAttempts <= 0 {
		return
	}
	if _, seen := i.warned.LoadOrStore(info.ActivityType.Name, struct{}{}); seen {
		return
	}
	activity.GetLogger(ctx).Warn("Each rate-limit denial uses one attempt of a guarded activity: "+
		"set MaximumAttempts to 0 and bound the activity with ScheduleToCloseTimeout instead",
		"ActivityType", info.ActivityType.Name, "Bucket", g.Bucket, "MaximumAttempts", rp.MaximumAttempts)
}

// requestID names an activity attempt, so that asking again for the same
// attempt never takes a second token.
func requestID(info activity.Info) string {
	h := sha256.New()
	for _, s := range []string{info.WorkflowNamespace, info.WorkflowExecution.ID, info.WorkflowExecution.RunID, info.ActivityID, info.ActivityRunID} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	fmt.Fprint(h, info.Attempt)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}

// Package interceptor rate-limits activities across every Temporal worker: a
// worker interceptor takes tokens from tb's bucket workflows before a guarded
// activity runs, through a per-process Acquirer that batches concurrent callers.
package interceptor

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
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
	// Guards maps an activity type to the buckets it draws from, each with
	// the tokens one run takes: the activity runs once it holds every one.
	// Activity types not listed run unguarded. Required; use a loaded
	// buckets.yaml's Config.Guards, or build it in Go.
	Guards map[string][]bucket.Guard
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
	// MaxPause caps a pause an upstream asks for (ReportHTTP). Default DefaultMaxPause.
	MaxPause time.Duration
	// KeyFunc, when set, returns the key of an activity guarded by a keyed
	// bucket, from its context (activity.GetInfo) and input, when its
	// workflow set none with WithKey; "" leaves it to the activity's
	// Priority.FairnessKey. An activity with no key fails, not retried.
	KeyFunc func(ctx context.Context, in *temporalinterceptor.ExecuteActivityInput) (string, error)
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
	guards := make(map[string][]bucket.Guard, len(opts.Guards))
	for name, gs := range opts.Guards {
		if len(gs) == 0 || len(gs) > bucket.MaxGuards {
			return nil, fmt.Errorf("interceptor: activity %q: guarded by %d buckets; want 1 to %d", name, len(gs), bucket.MaxGuards)
		}
		gs = slices.Clone(gs)
		slices.SortFunc(gs, func(a, b bucket.Guard) int { return strings.Compare(a.Bucket, b.Bucket) })
		for k, g := range gs {
			if err := bucket.CheckName(g.Bucket); err != nil {
				return nil, fmt.Errorf("interceptor: activity %q: bucket name %w", name, err)
			}
			if g.Cost <= 0 {
				return nil, fmt.Errorf("interceptor: activity %q: bucket %q: cost must be greater than 0, got %d", name, g.Bucket, g.Cost)
			}
			if k > 0 && gs[k-1].Bucket == g.Bucket {
				return nil, fmt.Errorf("interceptor: activity %q: bucket %q is named twice", name, g.Bucket)
			}
		}
		guards[name] = gs // in bucket order: the order tokens are taken in
	}
	opts.Guards = guards
	if opts.MaxWait == 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.MaxJitter == 0 {
		opts.MaxJitter = DefaultMaxJitter
	}
	if opts.MaxPause <= 0 {
		opts.MaxPause = DefaultMaxPause
	}
	check := opts.AcquirerOptions // checked here, defaulted for each client in acquirerOptions
	if err := check.setDefaults(); err != nil {
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

// Guarded returns the buckets and costs guarding an activity type, in the
// order tokens are taken in.
func (i *Interceptor) Guarded(activityType string) ([]bucket.Guard, bool) {
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
	guards, ok := a.i.Guarded(info.ActivityType.Name)
	if !ok {
		return a.Next.ExecuteActivity(ctx, in)
	}
	var key string
	if slices.ContainsFunc(guards, func(g bucket.Guard) bool { return g.Shards > 0 }) {
		var err error
		if key, err = a.i.activityKey(ctx, in); err != nil {
			return nil, err
		}
		if key == "" {
			return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"activity %s draws from a keyed bucket and has no key: set one with interceptor.WithKey in the workflow, the %s header, Options.KeyFunc, or a Priority.FairnessKey",
				info.ActivityType.Name, KeyHeader), ErrKeyRequired, nil)
		}
	}
	h, err := a.i.take(ctx, info, guards, key)
	if err != nil {
		return nil, err
	}
	result, err := a.Next.ExecuteActivity(context.WithValue(ctx, grantKey{}, h), in)
	a.i.settleUp(ctx, h)
	return result, err
}

// held is what a running guarded activity holds: its grants, and the costs
// its body reported with SetCost.
type held struct {
	ic     *Interceptor
	lim    Limiter
	id     string // the request ID, the same in every bucket
	key    string // the activity's key, for its keyed buckets
	guards []bucket.Guard
	grants []Grant

	mu     sync.Mutex
	actual map[string]int64 // by bucket
}

// take returns once the activity holds the tokens of every guard, or with
// the error the activity should fail with. It asks the buckets in order; a
// denial short enough is waited out in the activity, keeping the tokens
// already held; otherwise every grant is given back and the activity fails
// with one RateLimited error for the longest wait, naming every bucket that
// denied.
func (i *Interceptor) take(ctx context.Context, info activity.Info, guards []bucket.Guard, key string) (*held, error) {
	i.warnRetryPolicy(ctx, info, guards)
	lim, err := i.limiter(ctx)
	if err != nil {
		return nil, err
	}
	h := &held{ic: i, lim: lim, id: requestID(info), key: key, guards: guards, grants: make([]Grant, len(guards))}
	m := metricsFor(ctx)
	got := make([]bool, len(guards))
	for {
		var denials []Denial
		for k, g := range guards {
			if got[k] {
				continue
			}
			d, err := m.acquire(g.Bucket, g.Cost, func() (Decision, error) { return h.acquire(ctx, g) })
			if err != nil {
				i.giveBack(ctx, h, got)
				return nil, err
			}
			gkey := ""
			if g.Shards > 0 {
				gkey = key
			}
			if d.Granted && !d.Shadow {
				if until := pausedHere(lim, g); !until.IsZero() {
					// Granted before this process heard that the upstream
					// paused: the call would be refused. Give the tokens back
					// and come back when the pause ends. Not waited out here:
					// asked again, the request would be answered as granted.
					got[k], h.grants[k] = true, Grant{Bucket: g.Bucket, Cost: g.Cost}
					i.giveBack(ctx, h, got)
					return nil, m.denied(i.rateLimited([]Denial{{Bucket: g.Bucket, Cost: g.Cost, RetryAfter: max(time.Until(until), minRetryDelay), NextRefill: d.NextRefill}}))
				}
			}
			if d.Granted {
				got[k] = true
				h.grants[k] = Grant{Bucket: g.Bucket, Cost: g.Cost, Key: gkey, Remaining: d.Remaining, NextRefill: d.NextRefill, LastRefill: d.LastRefill, Shadow: d.Shadow}
				continue
			}
			denials = append(denials, Denial{Bucket: g.Bucket, Key: gkey, Cost: g.Cost, Remaining: d.Remaining, RetryAfter: d.RetryAfter, NextRefill: d.NextRefill})
		}
		if len(denials) == 0 {
			return h, nil
		}
		longest := slices.MaxFunc(denials, func(a, b Denial) int { return cmp.Compare(a.RetryAfter, b.RetryAfter) })
		if !m.wait(longest.Bucket, func() bool { return i.wait(ctx, info, longest.RetryAfter) }) {
			i.giveBack(ctx, h, got)
			return nil, m.denied(i.rateLimited(denials))
		}
	}
}

// settleTimeout bounds sending a settle-up: the activity is done, and its
// own context may be too.
const settleTimeout = 5 * time.Second

// giveBack refunds the grants held, when the activity will not run. A
// Limiter that cannot settle keeps them: tokens lost, never doubled.
func (i *Interceptor) giveBack(ctx context.Context, h *held, got []bool) {
	for k, g := range h.grants {
		if got[k] {
			i.settle(ctx, h, g.Bucket, -g.Cost)
		}
	}
}

// settleUp settles the costs the activity's body reported with SetCost.
func (i *Interceptor) settleUp(ctx context.Context, h *held) {
	h.mu.Lock()
	actual := h.actual
	h.mu.Unlock()
	for _, g := range h.grants {
		if cost, ok := actual[g.Bucket]; ok && cost != g.Cost {
			i.settle(ctx, h, g.Bucket, cost-g.Cost)
		}
	}
}

// acquire asks guard g's bucket, or the bucket of the activity's key when g is keyed.
func (h *held) acquire(ctx context.Context, g bucket.Guard) (Decision, error) {
	if g.Shards == 0 {
		return h.lim.Acquire(ctx, g.Bucket, h.id, g.Cost)
	}
	kl, ok := h.lim.(KeyedLimiter)
	if !ok {
		return Decision{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("bucket %q is keyed, and the Limiter (%T) takes no keys", g.Bucket, h.lim), workflows.ErrInvalidRequest, nil)
	}
	return kl.AcquireKey(ctx, Key{Bucket: g.Bucket, Key: h.key, Shards: g.Shards}, h.id, g.Cost)
}

// guard returns the guard of the named bucket.
func (h *held) guard(bucketName string) bucket.Guard {
	for _, g := range h.guards {
		if g.Bucket == bucketName {
			return g
		}
	}
	return bucket.Guard{Bucket: bucketName}
}

func (i *Interceptor) settle(ctx context.Context, h *held, bucketName string, tokens int64) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	var err error
	if g := h.guard(bucketName); g.Shards > 0 {
		kl, ok := h.lim.(KeyedLimiter)
		if !ok {
			return
		}
		err = kl.SettleKey(sctx, Key{Bucket: g.Bucket, Key: h.key, Shards: g.Shards}, h.id, tokens)
	} else if s, ok := h.lim.(Settler); ok {
		err = s.Settle(sctx, bucketName, h.id, tokens)
	} else {
		return
	}
	if err != nil {
		activity.GetLogger(ctx).Warn("Could not settle tokens with the bucket: a refund is lost, a charge not taken",
			"Bucket", bucketName, "Tokens", tokens, "Error", err)
	}
}

// SetCost reports, from inside a guarded activity, what the call really cost
// in the named bucket's tokens (the bucket may be "" when the activity draws
// from one bucket). When the activity returns, the difference from what it
// was granted is settled: less gives the rest back (while the window it was
// granted in lasts), more is charged, and what the bucket cannot cover
// becomes a debt its next refills pay first. The last report for a bucket wins.
func SetCost(ctx context.Context, bucketName string, cost int64) error {
	h, ok := ctx.Value(grantKey{}).(*held)
	if !ok {
		return errors.New("interceptor: SetCost outside a guarded activity")
	}
	if cost < 0 {
		return fmt.Errorf("interceptor: SetCost: cost must not be negative, got %d", cost)
	}
	if bucketName == "" && len(h.grants) == 1 {
		bucketName = h.grants[0].Bucket
	}
	if !slices.ContainsFunc(h.grants, func(g Grant) bool { return g.Bucket == bucketName }) {
		return fmt.Errorf("interceptor: SetCost: the activity draws from no bucket %q", bucketName)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.actual == nil {
		h.actual = map[string]int64{}
	}
	h.actual[bucketName] = min(cost, bucket.MaxTokens)
	return nil
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
// NextRetryDelay set to when every bucket that denied expects the tokens,
// plus jitter. Its detail is the Denial of the longest wait, the others in Also.
func (i *Interceptor) rateLimited(denials []Denial) error {
	k := 0
	for j, d := range denials {
		if d.RetryAfter > denials[k].RetryAfter {
			k = j
		}
	}
	d := denials[k]
	d.Also = append(slices.Clone(denials[:k]), denials[k+1:]...)
	if len(d.Also) == 0 {
		d.Also = nil
	}
	delay := max(d.RetryAfter, minRetryDelay)
	if spread := min(i.opts.MaxJitter, d.RetryAfter/10); spread > 0 {
		delay += rand.N(spread)
	}
	name := func(d Denial) string {
		if d.Key != "" {
			return fmt.Sprintf("bucket %q (key %q)", d.Bucket, d.Key)
		}
		return fmt.Sprintf("bucket %q", d.Bucket)
	}
	msg := fmt.Sprintf("rate limited by %s: %d tokens left, %d needed; retrying in %v",
		name(d), d.Remaining, d.Cost, delay.Round(time.Millisecond))
	for _, o := range d.Also {
		msg += fmt.Sprintf("; and by %s: %d tokens left, %d needed", name(o), o.Remaining, o.Cost)
	}
	return temporal.NewApplicationErrorWithOptions(msg, workflows.ErrRateLimited,
		temporal.ApplicationErrorOptions{
			NextRetryDelay: delay,
			Category:       temporal.ApplicationErrorCategoryBenign,
			Details:        []any{d},
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
		a, _ = NewAcquirer(c, i.acquirerOptions(ctx)) // options were checked in New
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
func (i *Interceptor) warnRetryPolicy(ctx context.Context, info activity.Info, guards []bucket.Guard) {
	rp := info.RetryPolicy
	if rp == nil || rp.MaximumAttempts <= 0 {
		return
	}
	if _, seen := i.warned.LoadOrStore(info.ActivityType.Name, struct{}{}); seen {
		return
	}
	activity.GetLogger(ctx).Warn("Each rate-limit denial uses one attempt of a guarded activity: "+
		"set MaximumAttempts to 0 and bound the activity with ScheduleToCloseTimeout instead",
		"ActivityType", info.ActivityType.Name, "Bucket", guards[0].Bucket, "MaximumAttempts", rp.MaximumAttempts)
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

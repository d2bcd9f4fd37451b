package tbtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// A Limiter keeps token buckets in memory and answers as tb's bucket
// workflows do, on a clock the test controls. Give it to the interceptor
// through interceptor.Options.Limiter.
//
// Each bucket starts when NewLimiter is called, with its spec's initial
// tokens (default: its maximum), and is refilled by Amount, up to Maximum, at
// every tick of its schedule the clock passes: the refill is applied as of
// the tick, as if the bucket's Schedule delivered it without delay, so a
// denied request is told to come back exactly at the tick that brings its
// tokens. Each Acquire is decided alone, as an acquire update carrying one
// request: its RetryAfter counts the bucket's refills, not other callers
// waiting. (In production, callers asking at once share one update, and
// those behind the first denied one are told later refills; here callers
// denied together are all told the first refill, and come back together;
// the bucket workflow tells the batches it refuses for one refill to come
// back bucket.ComebackGap apart, which a test's clock need not see.)
// An id once granted is remembered for the Limiter's life.
//
// A Limiter is safe for concurrent use.
type Limiter struct {
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*entry
}

var (
	_ interceptor.Limiter      = (*Limiter)(nil)
	_ interceptor.Settler      = (*Limiter)(nil)
	_ interceptor.Reporter     = (*Limiter)(nil)
	_ interceptor.KeyedLimiter = (*Limiter)(nil)
)

// A grant is what Settle may still give back of one, and when it was made.
type grant struct {
	at         time.Time
	refundable int64
	settled    bool
}

type entry struct {
	reports map[string]bool   // upstream reports applied
	keys    map[string]*entry // a keyed bucket's keys
	b       *bucket.Bucket
	granted map[string]*grant
	stats   Stats
}

// Stats counts the requests one bucket of a Limiter has answered.
type Stats struct {
	// Grants counts requests granted, each once: a request asked again with
	// an id already granted counts as a Duplicate.
	Grants int
	// Denials counts requests refused for want of tokens.
	Denials int
	// Duplicates counts requests answered with an earlier grant of their id.
	Duplicates int
	// GrantedTokens and DeniedTokens sum the costs of those grants and denials.
	GrantedTokens, DeniedTokens int64
	// Refunded and Charged sum the tokens Settle gave back and charged;
	// Unrefunded those it did not give back, the grant's window having ended.
	Refunded, Charged, Unrefunded int64
}

// NewLimiter returns a Limiter holding a bucket for each spec, read on the
// clock now: a Clock's Now, or the Now of a testsuite.TestWorkflowEnvironment.
// Pass a loaded buckets.yaml's buckets as NewLimiter(now, cfg.Buckets...).
// It returns an error for an invalid spec or two buckets with one name.
func NewLimiter(now func() time.Time, specs ...bucket.Spec) (*Limiter, error) {
	if now == nil {
		return nil, fmt.Errorf("tbtest: NewLimiter needs a clock")
	}
	l := &Limiter{now: now, buckets: make(map[string]*entry, len(specs))}
	created := now()
	for _, spec := range specs {
		if err := spec.Validate(); err != nil {
			return nil, fmt.Errorf("tbtest: %w", err)
		}
		if _, dup := l.buckets[spec.Name]; dup {
			return nil, fmt.Errorf("tbtest: bucket %q is given twice", spec.Name)
		}
		b, err := bucket.New(spec)
		if err != nil {
			return nil, fmt.Errorf("tbtest: bucket %q: %w", spec.Name, err)
		}
		b.Created = created
		l.buckets[spec.Name] = &entry{b: b, granted: map[string]*grant{}}
	}
	return l, nil
}

// Acquire asks the named bucket for cost tokens, as interceptor.Limiter
// describes, and answers as tb's Acquirer does with a bucket workflow behind
// it: a denial is a Decision with RetryAfter until the tick that brings the
// tokens; an id already granted is granted again without taking tokens; an
// invalid bucket name, id or cost is a non-retryable *temporal.ApplicationError
// of type workflows.ErrInvalidRequest; a bucket the Limiter does not hold is a
// retryable one of type workflows.ErrUnknownBucket; a done ctx returns its error.
func (l *Limiter) Acquire(ctx context.Context, name, id string, cost int64) (interceptor.Decision, error) {
	return l.AcquireKey(ctx, interceptor.Key{Bucket: name}, id, cost)
}

// AcquireKey is Acquire for one key of a keyed bucket: each key has a bucket
// of its own, of the keyed bucket's spec, starting at its initial tokens
// when the key is first asked for.
func (l *Limiter) AcquireKey(ctx context.Context, k interceptor.Key, id string, cost int64) (interceptor.Decision, error) {
	name := k.Bucket
	if err := bucket.CheckName(name); err != nil {
		return interceptor.Decision{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("bucket %q: not a bucket name: %v", name, err), workflows.ErrInvalidRequest, nil)
	}
	if id == "" || len(id) > workflows.MaxIDLength {
		return interceptor.Decision{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("bucket %q: a request id must be 1 to %d bytes long, got %d", name, workflows.MaxIDLength, len(id)),
			workflows.ErrInvalidRequest, nil)
	}
	if err := ctx.Err(); err != nil {
		return interceptor.Decision{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e, err := l.keyEntry(k, now)
	if err != nil {
		return interceptor.Decision{}, err
	}
	e.refill(now)
	b := e.b
	if e.granted[id] != nil {
		e.stats.Duplicates++
		return e.decision(now, bucket.Result{Granted: true, Remaining: b.Tokens}), nil
	}
	if err := bucket.CheckCost(cost, b.Spec().Maximum); err != nil {
		return interceptor.Decision{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("bucket %q: %v", name, err), workflows.ErrInvalidRequest, nil)
	}
	r := b.Take(now, []int64{cost})[0]
	if r.Granted {
		e.granted[id] = &grant{at: now, refundable: cost}
		e.stats.Grants++
		e.stats.GrantedTokens += cost
	} else {
		e.stats.Denials++
		e.stats.DeniedTokens += cost
	}
	return e.decision(now, r), nil
}

// Settle settles the grant made to request id, as a bucket workflow does:
// tokens < 0 gives that many back, no more than the grant's cost, if no
// refill has come since the grant; tokens > 0 charges more, and what the
// bucket cannot cover becomes a debt the next refills pay. Each grant is
// settled once. Stats counts refunds and charges in Refunded and Charged.
func (l *Limiter) Settle(ctx context.Context, name, id string, tokens int64) error {
	return l.SettleKey(ctx, interceptor.Key{Bucket: name}, id, tokens)
}

// SettleKey is Settle for one key of a keyed bucket.
func (l *Limiter) SettleKey(ctx context.Context, k interceptor.Key, id string, tokens int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e, err := l.keyEntry(k, now)
	if err != nil {
		return err
	}
	e.refill(now)
	g := e.granted[id]
	if g != nil && g.settled {
		return nil
	}
	switch {
	case tokens < 0 && g != nil:
		n := min(-tokens, g.refundable)
		g.refundable -= n
		if g.at.Before(e.b.LastTick) { // the window ended: the refill restored the bucket
			e.stats.Unrefunded += n
		} else {
			e.stats.Refunded += e.b.Refund(n)
		}
	case tokens > 0:
		e.b.Charge(tokens)
		e.stats.Charged += tokens
	}
	if g != nil {
		g.settled = true
	}
	return nil
}

// Report applies what an upstream said, as a bucket workflow does: a pause
// (capped at bucket.MaxPause) grants nothing until it ends, a count of what
// is left lowers the tokens. Each report id is applied once.
func (l *Limiter) Report(ctx context.Context, name, id string, u interceptor.Upstream) error {
	return l.ReportKey(ctx, interceptor.Key{Bucket: name}, id, u)
}

// ReportKey is Report for one key of a keyed bucket: that key alone pauses.
func (l *Limiter) ReportKey(ctx context.Context, k interceptor.Key, id string, u interceptor.Upstream) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, err := l.keyEntry(k, l.now())
	if err != nil {
		return err
	}
	if e.reports[id] {
		return nil
	}
	if e.reports == nil {
		e.reports = map[string]bool{}
	}
	e.reports[id] = true
	now := l.now()
	e.refill(now)
	if u.Pause > 0 {
		e.b.Pause(now, now.Add(u.Pause))
	}
	if u.Remaining != nil {
		e.b.Calibrate(*u.Remaining)
	}
	return nil
}

// Debt returns the named bucket's debt: tokens charged beyond what it held,
// which its next refills pay first. It panics if the Limiter holds no such bucket.
func (l *Limiter) Debt(name string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.mustEntry(name)
	e.refill(l.now())
	return e.b.Debt
}

// Tokens returns the tokens the named bucket holds now. It panics if the
// Limiter holds no such bucket.
func (l *Limiter) Tokens(name string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.mustEntry(name)
	e.refill(l.now())
	return e.b.Tokens
}

// SetTokens sets the tokens the named bucket holds now; later ticks refill
// from there. It panics if the Limiter holds no such bucket, or if tokens
// lies outside [0, the bucket's maximum].
func (l *Limiter) SetTokens(name string, tokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.mustEntry(name)
	if maximum := e.b.Spec().Maximum; tokens < 0 || tokens > maximum {
		panic(fmt.Sprintf("tbtest: SetTokens(%q, %d): bucket %q holds 0 to %d tokens", name, tokens, name, maximum))
	}
	e.refill(l.now())
	e.b.Tokens = tokens
}

// NextRefill returns when the named bucket's next refill comes: the next
// tick of its schedule after now, or the zero time if it never fires again.
// It panics if the Limiter holds no such bucket.
func (l *Limiter) NextRefill(name string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.mustEntry(name)
	now := l.now()
	e.refill(now)
	return e.b.NextRefill(now)
}

// Stats returns what the named bucket has answered so far. It panics if the
// Limiter holds no such bucket.
func (l *Limiter) Stats(name string) Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mustEntry(name).stats
}

func (l *Limiter) entry(name string) (*entry, error) {
	if e := l.buckets[name]; e != nil {
		return e, nil
	}
	return nil, temporal.NewApplicationError(
		fmt.Sprintf("bucket %q is not running (no workflow %s): this tbtest.Limiter holds %s",
			name, workflows.BucketID(name), l.names()), workflows.ErrUnknownBucket)
}

// keyEntry returns the entry a Key names: the bucket's, or its key's bucket,
// made at now if new.
func (l *Limiter) keyEntry(k interceptor.Key, now time.Time) (*entry, error) {
	e, err := l.entry(k.Bucket)
	if err != nil {
		return nil, err
	}
	spec := e.b.Spec()
	switch {
	case !spec.Keyed && k.Key == "":
		return e, nil
	case !spec.Keyed:
		return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf("bucket %q is not keyed; the request names key %q", k.Bucket, k.Key), workflows.ErrInvalidRequest, nil)
	}
	if err := bucket.CheckKey(k.Key); err != nil {
		return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf("bucket %q is keyed: %v", k.Bucket, err), interceptor.ErrKeyRequired, nil)
	}
	if ke := e.keys[k.Key]; ke != nil {
		return ke, nil
	}
	b, err := bucket.New(spec)
	if err != nil {
		return nil, err
	}
	b.Created = now
	ke := &entry{b: b, granted: map[string]*grant{}}
	if e.keys == nil {
		e.keys = map[string]*entry{}
	}
	e.keys[k.Key] = ke
	return ke, nil
}

// KeyTokens returns the tokens one key of a keyed bucket holds now: its
// initial tokens when it was never asked for. It panics if the Limiter
// holds no such keyed bucket.
func (l *Limiter) KeyTokens(name, key string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e, err := l.keyEntry(interceptor.Key{Bucket: name, Key: key, Shards: 1}, now)
	if err != nil {
		panic("tbtest: " + err.Error())
	}
	e.refill(now)
	return e.b.Tokens
}

func (l *Limiter) mustEntry(name string) *entry {
	e, err := l.entry(name)
	if err != nil {
		panic("tbtest: " + err.Error())
	}
	return e
}

// names lists the buckets, for messages.
func (l *Limiter) names() string {
	if len(l.buckets) == 0 {
		return "no bucket"
	}
	names := make([]string, 0, len(l.buckets))
	for n := range l.buckets {
		names = append(names, fmt.Sprintf("%q", n))
	}
	slices.Sort(names)
	return "buckets " + strings.Join(names, ", ")
}

func (e *entry) decision(now time.Time, r bucket.Result) interceptor.Decision {
	return interceptor.Decision{
		Granted:    r.Granted,
		Remaining:  r.Remaining,
		RetryAfter: r.RetryAfter,
		NextRefill: e.b.NextRefill(now),
		LastRefill: e.b.LastRefill,
		Shadow:     r.Shadow,
	}
}

// refill applies every tick of the bucket's schedule up to now, each as of
// its own instant, as a Schedule whose refills arrive on time would.
func (e *entry) refill(now time.Time) {
	b := e.b
	for {
		tick := b.NextTick()
		if tick.IsZero() || tick.After(now) {
			return
		}
		if b.Tokens == b.Spec().Maximum && len(b.Late) == 0 {
			// Full: the ticks until now add nothing, so apply only the last.
			tick = lastTick(b.Schedule(), tick, now)
		}
		b.Refill(tick, tick, b.Spec().Amount)
	}
}

// lastTick returns the latest tick of s in [first, now]; first is a tick in it.
func lastTick(s *bucket.Schedule, first, now time.Time) time.Time {
	last := first
	// Find a tick close to now by looking back over doubling windows, then
	// walk forward from it; walking from first could take millions of ticks.
	for window := time.Second; window > 0 && window < now.Sub(last); window *= 2 {
		if t := s.Next(now.Add(-window)); !t.IsZero() && !t.After(now) {
			last = t
			break
		}
	}
	for t := s.Next(last); !t.IsZero() && !t.After(now); t = s.Next(t) {
		last = t
	}
	return last
}

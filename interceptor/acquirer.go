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

	"github.com/google/uuid"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/workflows"
)

// Updater is the part of a Temporal client the Acquirer uses; client.Client
// implements it. When the Updater also has a WorkflowService method, as
// client.Client has, acquire updates are sent through it (see
// AcquirerOptions.Namespace and DataConverter), not UpdateWorkflow.
type Updater interface {
	UpdateWorkflow(ctx context.Context, options client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error)
	// SignalWorkflow gives back the unused tokens of a lease.
	SignalWorkflow(ctx context.Context, workflowID, runID, signalName string, arg any) error
}

// AcquirerOptions configure an Acquirer. The zero value is ready to use.
type AcquirerOptions struct {
	// MaxInFlight is how many acquire updates one bucket may have in flight
	// from this process at once: 1 (the default) or 2. Temporal serves at most
	// 10 in-flight updates per workflow and slows sharply beyond, so callers
	// that arrive meanwhile wait and travel together in the next update.
	MaxInFlight int
	// MaxBatch caps the requests one update carries. Default and maximum: workflows.MaxBatch.
	MaxBatch int
	// Timeout bounds one acquire update, retries included. Default 10s.
	Timeout time.Duration
	// StartSpread: the first update sent to each bucket waits a random part
	// of it, with the callers that arrive meanwhile, so that the processes of
	// a fleet started together reach the bucket one after another. Temporal
	// serves 10 Updates in flight per workflow, and past that aborts every
	// Update in flight on it: a burst can stall a bucket for seconds.
	// Default DefaultStartSpread; negative: none, for a process known to be
	// alone.
	StartSpread time.Duration
	// IdleSpread: in a fleet, an update sent to a bucket after its updates
	// from this process were idle for a second waits a random part of
	// IdleSpread × processes ÷ 64, at most IdleSpread, where processes is
	// how many the bucket says ask it (workflows.AcquireResponse.Processes):
	// a fleet asking again at once, after a quiet spell, reaches the bucket
	// spread out, as at its start. At most 8 processes never wait. Default
	// StartSpread (none when that is negative); negative: none.
	IdleSpread time.Duration
	// Namespace is the client's namespace, where the buckets run. Default
	// "default", as for client.Options; the interceptor's Acquirers take
	// the namespace of the activity.
	Namespace string
	// DataConverter encodes the acquire updates and decodes their answers:
	// give the client's, when it has a codec. Default
	// converter.GetDefaultDataConverter().
	DataConverter converter.DataConverter
	// Lease, when above 0, borrows that many tokens from a rich bucket (one
	// that keeps at least as many) with each update, and hands them to later
	// callers at once, without a round trip, until shortly before the
	// bucket's next tick; the unused rest is then given back. A process that
	// dies holding a lease loses it: at most Lease tokens per bucket, never
	// granted twice. Default 0: every grant is a round trip.
	Lease int64
	// MetricsHandler records the Updates sent (MetricAcquireUpdates,
	// MetricAcquireUpdateRequests). Default: none recorded, since a
	// client.Client does not expose its handler: pass the one given to
	// client.Options.MetricsHandler. The interceptor's own Acquirers record
	// through the handler of the worker's client.
	MetricsHandler client.MetricsHandler
}

// leaseMargin ends a lease that long before the bucket's window ends, so the
// return of its unused tokens reaches the bucket within the window.
const leaseMargin = 500 * time.Millisecond

// reportDelay: tokens the bucket's validator refused are reported in the
// next accepted batch; when none has carried them for this long, a report
// signal does, so the bucket's Denied count catches up with what callers saw.
const reportDelay = 5 * time.Second

// DefaultStartSpread is AcquirerOptions.StartSpread unless set: 64 processes
// starting within a millisecond reached the bucket with no update over the
// limit.
const DefaultStartSpread = time.Second

// defaultStartSpread is DefaultStartSpread, which this package's tests of
// other things set to none.
var defaultStartSpread = DefaultStartSpread

// DefaultAcquireTimeout bounds an acquire update unless AcquirerOptions.Timeout says otherwise.
const DefaultAcquireTimeout = 10 * time.Second

// An Acquirer takes tokens from bucket workflows on behalf of every caller in
// a process. Per bucket it keeps at most MaxInFlight acquire updates in
// flight, and carries every caller that arrived meanwhile in the next one,
// so the cost of an update round trip is shared by all waiting callers.
// It is safe for concurrent use. Close it when the process stops: it gives
// back the tokens its leases still hold.
type Acquirer struct {
	c    Updater
	opts AcquirerOptions
	now  func() time.Time // the process's clock; leases are timed on it alone
	// svc sends the acquire updates, when c has it (see update.go);
	// failures decodes their failures.
	svc      workflowservice.WorkflowServiceClient
	failures converter.FailureConverter
	// reportDelay, which tests shorten.
	reportDelay time.Duration
	metrics     acquirerMetrics
	// process identifies this Acquirer to the buckets it asks
	// (workflows.AcquireBatch.Process), which count how many ask them.
	process string

	mu      sync.Mutex
	queues  map[string]*queue // by bucket name
	closed  bool
	senders sync.WaitGroup // drain goroutines
}

var _ Limiter = (*Acquirer)(nil)

type queue struct {
	bucket string // the bucket's name, for messages
	wf     string // the workflow the updates go to: the bucket's, or a shard's
	keyed  bool   // requests carry keys: no lease, no refusals here

	pending  []*call
	inFlight int
	// rejected counts tokens the bucket's validator turned away since the
	// last accepted batch; the next batch reports them so the bucket counts them.
	rejected  int64
	reporting bool // a report of rejected is due
	lease     lease

	// The bucket refused the first request of the latest batch: until quiet,
	// it holds at most quietTokens for this process's callers, and a caller
	// asking for more is refused here, without an update (see enqueue).
	quiet       time.Time
	quietTokens int64
	quietAnswer Decision
	// quietEnds is when this process stops refusing by itself and asks the
	// bucket again: quiet, or maxQuiet after the refusal if sooner, so a
	// refill by hand (tb refill) reaches its callers within maxQuiet even
	// when the bucket's next tick is hours away.
	quietEnds time.Time
	// paused lists the IDs of the latest reports that paused the bucket
	// (at most maxPauseReports): the bucket applies a report once per ID,
	// and so does this process, so a repeat does not move the pause.
	paused []string
	// offset is the random part of spread added to the retry-after of every
	// caller refused in this quiet spell: callers told the same refill come
	// back together, in one update, and the processes of a fleet each at
	// their own moment after it.
	offset time.Duration
	// spread is how widely this process spreads the callers it refuses (see
	// offset), and its own updates after one met congestion: the callers of
	// a fleet, all refused until the same refill, reach the bucket spread out
	// over spread instead of at once, and the first of them still find the
	// refill's tokens. It doubles when an update is slow
	// (more than congestedAfter, and congestedRTTs times rtt, the smoothed
	// round trip of the quick ones) and shrinks by spreadStep with each quick
	// one: additive increase of the rate at which the fleet asks,
	// multiplicative decrease.
	spread    time.Duration
	rtt       time.Duration
	congested bool
	started   bool // the first batch was paced (see pace)
	// fleet is how many processes the bucket said ask it
	// (workflows.AcquireResponse.Processes), as of fleetAt; idle is when the
	// latest update was answered, or its refused callers were told to come
	// back (zero once an idle batch is paced).
	fleet   int
	fleetAt time.Time
	idle    time.Time
}

// maxQuiet bounds how long a process refuses a bucket's callers by itself
// after the bucket refused (see queue.quietEnds): then one update asks again.
const maxQuiet = 10 * time.Second

// Pacing of a bucket's updates from one process; see queue.spread.
const (
	spreadStep = 5 * time.Millisecond
	minSpread  = 50 * time.Millisecond
	maxSpread  = time.Second
	// maxPace bounds the wait before the batch that follows a congested
	// update (see queue.pace).
	maxPace = 100 * time.Millisecond
	// A batch sent after the bucket's updates were idle for idleAfter, by a
	// process of a fleet of more than aloneUpTo processes, waits a random
	// part of IdleSpread × processes ÷ fullSpreadAt (at most IdleSpread), as
	// the first batch does (see AcquirerOptions.IdleSpread). A fleet smaller
	// than Temporal's 10 updates in flight per workflow never waits.
	idleAfter    = time.Second
	aloneUpTo    = 8
	fullSpreadAt = 64
	// fleetMemory: a count lower than the one remembered replaces it only
	// once that one is this old (a bucket continuing as new counts from zero).
	fleetMemory = time.Minute
	// An update is congested when it takes more than congestedAfter and
	// more than congestedRTTs times the smoothed round trip.
	congestedAfter = 50 * time.Millisecond
	congestedRTTs  = 4
)

// A lease is tokens lent to this process, handed out until until.
type lease struct {
	id        string
	tokens    int64
	until     time.Time
	requested bool // a lease request is in flight
	bucket    Decision
	timer     *time.Timer      // gives back what is left at until
	served    map[string]int64 // request ID → tokens handed out of this lease
}

type call struct {
	req  workflows.AcquireRequest
	done chan outcome // buffered: the sender never blocks
}

type outcome struct {
	d   Decision
	err error
}

// NewAcquirer returns an Acquirer that sends updates through c.
func NewAcquirer(c Updater, opts AcquirerOptions) (*Acquirer, error) {
	if c == nil {
		return nil, errors.New("interceptor: NewAcquirer needs a client")
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	a := &Acquirer{c: c, opts: opts, now: time.Now, reportDelay: reportDelay, metrics: newAcquirerMetrics(opts.MetricsHandler), queues: map[string]*queue{}, process: uuid.NewString(),
		failures: temporal.NewDefaultFailureConverter(temporal.DefaultFailureConverterOptions{DataConverter: opts.DataConverter})}
	if s, ok := c.(workflowServicer); ok {
		a.svc = s.WorkflowService()
	}
	return a, nil
}

func (o *AcquirerOptions) setDefaults() error {
	switch {
	case o.MaxInFlight == 0:
		o.MaxInFlight = 1
	case o.MaxInFlight < 0 || o.MaxInFlight > 2:
		return fmt.Errorf("interceptor: MaxInFlight is %d; use 1 or 2", o.MaxInFlight)
	}
	if o.MaxBatch <= 0 || o.MaxBatch > workflows.MaxBatch {
		o.MaxBatch = workflows.MaxBatch
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultAcquireTimeout
	}
	if o.StartSpread == 0 {
		o.StartSpread = defaultStartSpread
	}
	if o.IdleSpread == 0 {
		o.IdleSpread = o.StartSpread
	}
	if o.Namespace == "" {
		o.Namespace = client.DefaultNamespace
	}
	if o.DataConverter == nil {
		o.DataConverter = converter.GetDefaultDataConverter()
	}
	if o.Lease < 0 {
		return fmt.Errorf("interceptor: Lease is %d; use 0 (no lease) or more", o.Lease)
	}
	return nil
}

// Acquire asks the named bucket for cost tokens. id identifies the request
// (1 to workflows.MaxIDLength bytes): acquiring again with an id already
// granted returns the grant without taking more tokens, so a caller unsure of
// the outcome can safely ask again.
//
// A denial is a Decision, not an error. The error is an *temporal.ApplicationError
// of type workflows.ErrInvalidRequest (never grantable) or ErrUnknownBucket,
// ErrClosed once Close was called, or says why the bucket could not be
// reached; ctx's error when ctx ends first. Tokens granted to a caller whose
// ctx has ended are not returned to the bucket.
func (a *Acquirer) Acquire(ctx context.Context, bucketName, id string, cost int64) (Decision, error) {
	return a.AcquireKey(ctx, Key{Bucket: bucketName}, id, cost)
}

// AcquireKey is Acquire for one key of a keyed bucket (or, with no Key, for
// a bucket that is not keyed). The requests of one shard's keys travel
// together, in one update.
func (a *Acquirer) AcquireKey(ctx context.Context, k Key, id string, cost int64) (Decision, error) {
	t, err := k.target()
	if err != nil {
		return Decision{}, err
	}
	if id == "" || len(id) > workflows.MaxIDLength {
		return Decision{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("bucket %q: a request id must be 1 to %d bytes long, got %d", k.Bucket, workflows.MaxIDLength, len(id)),
			workflows.ErrInvalidRequest, nil)
	}
	c := &call{req: workflows.AcquireRequest{ID: id, Cost: cost, Key: k.Key}, done: make(chan outcome, 1)}
	a.enqueue(t, c)
	select {
	case o := <-c.done:
		return o.d, o.err
	case <-ctx.Done():
		a.forget(t.wf, c)
		return Decision{}, ctx.Err()
	}
}

// queueFor returns the queue of a target, made if missing. a.mu is held.
func (a *Acquirer) queueFor(t target) *queue {
	q := a.queues[t.wf]
	if q == nil {
		q = &queue{bucket: t.bucket, wf: t.wf, keyed: t.keyed}
		a.queues[t.wf] = q
	}
	return q
}

func (a *Acquirer) enqueue(t target, c *call) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		c.done <- outcome{err: ErrClosed}
		return
	}
	q := a.queueFor(t)
	now := a.now()
	if l := &q.lease; l.tokens >= c.req.Cost && now.Before(l.until) {
		l.tokens -= c.req.Cost
		if l.served == nil {
			l.served = map[string]int64{}
		}
		l.served[c.req.ID] += c.req.Cost
		d := l.bucket
		d.Granted = true
		a.mu.Unlock()
		c.done <- outcome{d: d}
		return
	}
	if d, ok := q.refuse(now, c); ok {
		if q.inFlight == 0 {
			a.reportLater(q)
		}
		a.mu.Unlock()
		c.done <- outcome{d: d}
		return
	}
	q.pending = append(q.pending, c)
	start := q.inFlight < a.opts.MaxInFlight
	if start {
		q.inFlight++
		a.senders.Add(1)
	}
	a.mu.Unlock()
	if start {
		go a.drain(q)
	}
}

// refuse answers a call here if the bucket said, moments ago, that it holds
// too few tokens for it until q.quiet; the next batch, or a report, tells the
// bucket. The Acquirer's mu is held.
func (q *queue) refuse(now time.Time, c *call) (Decision, bool) {
	if q.keyed || !now.Before(q.quiet) || !now.Before(q.quietEnds) || c.req.Cost <= q.quietTokens {
		return Decision{}, false
	}
	d := q.quietAnswer
	d.RetryAfter = q.quiet.Sub(now) + q.offset
	q.rejected += c.req.Cost
	return d, true
}

// forget drops a call whose caller gave up, if it has not been sent yet.
func (a *Acquirer) forget(wf string, c *call) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if q := a.queues[wf]; q != nil {
		for i, p := range q.pending {
			if p == c {
				q.pending = append(q.pending[:i], q.pending[i+1:]...)
				return
			}
		}
	}
}

// drain sends batches for one bucket until no caller waits.
func (a *Acquirer) drain(q *queue) {
	for {
		a.mu.Lock()
		if len(q.pending) == 0 {
			q.inFlight--
			a.reportLater(q)
			a.mu.Unlock()
			a.senders.Done()
			return
		}
		// Callers who arrived while the last update was in flight, and whom
		// its answer already refuses, are answered here.
		keep := q.pending[:0]
		for _, c := range q.pending {
			if d, ok := q.refuse(a.now(), c); ok {
				c.done <- outcome{d: d}
			} else {
				keep = append(keep, c)
			}
		}
		clear(q.pending[len(keep):])
		q.pending = keep
		if len(q.pending) == 0 {
			a.mu.Unlock()
			continue // the top of the loop ends the drain, or finds newcomers
		}
		if delay := q.pace(a.opts.StartSpread, a.opts.IdleSpread, a.now()); delay > 0 {
			a.mu.Unlock()
			<-time.After(delay) // pacing the updates; callers arriving meanwhile join the batch
			continue
		}
		n := min(len(q.pending), a.opts.MaxBatch)
		batch := q.pending[:n:n]
		q.pending = append([]*call(nil), q.pending[n:]...)
		rejected := q.rejected
		q.rejected = 0
		var borrow *workflows.AcquireRequest
		if a.opts.Lease > 0 && !q.keyed && !q.lease.requested && q.lease.tokens == 0 && !a.closed {
			borrow = &workflows.AcquireRequest{ID: "lease-" + uuid.NewString(), Cost: a.opts.Lease, Optional: true}
			q.lease.requested = true
		}
		a.mu.Unlock()

		sent := a.now()
		a.metrics.update(q.bucket, len(batch))
		resp, lent, unreported, refusedFor := a.send(q, batch, rejected, borrow)
		a.mu.Lock()
		q.rejected += unreported
		if refusedFor > 0 && !q.keyed {
			q.quiet = sent.Add(refusedFor)
			q.quietEnds = sent.Add(min(refusedFor, maxQuiet))
			q.quietTokens = resp.Tokens
			q.quietAnswer = Decision{Remaining: resp.Tokens, NextRefill: resp.NextRefill, LastRefill: resp.LastRefill}
		}
		if borrow != nil {
			q.lease.requested = false
			if lent {
				a.lend(q, borrow.ID, resp, sent)
			}
		}
		a.mu.Unlock()
	}
}

// pace returns how long to wait before sending the next batch: before the
// first, a random part of start (AcquirerOptions.StartSpread); after an idle
// spell, in a fleet, a random part of idle (AcquirerOptions.IdleSpread) as
// the fleet's size says; after a congested update, a random part of spread,
// at most maxPace. The Acquirer's mu is held.
func (q *queue) pace(start, idle time.Duration, now time.Time) time.Duration {
	if !q.started {
		q.started = true
		if start > 0 {
			return rand.N(start)
		}
	}
	if idle > 0 && q.fleet > aloneUpTo && !q.idle.IsZero() && now.Sub(q.idle) >= idleAfter {
		q.idle = time.Time{}
		if d := min(idle, idle/fullSpreadAt*time.Duration(q.fleet)); d > 0 {
			return rand.N(d)
		}
	}
	if !q.congested {
		return 0
	}
	q.congested = false
	return rand.N(min(q.spread, maxPace))
}

// heard takes the bucket's count of the processes that ask it, from an
// answer received at now that told refused callers to come back within
// comeback (0: none refused). The Acquirer's mu is held.
func (q *queue) heard(processes int, comeback time.Duration, now time.Time) {
	// Callers refused come back when the bucket said, which spaces the
	// comebacks of a fleet itself (bucket.Comebacks): the idle spell starts
	// then, or an idle spread would only delay them.
	q.idle = now.Add(min(comeback, maxQuiet))
	processes = min(processes, workflows.MaxProcessesSeen) // from the bucket, or from whoever answers for it
	if processes > 0 && (processes >= q.fleet || now.Sub(q.fleetAt) >= fleetMemory) {
		q.fleet, q.fleetAt = processes, now
	}
}

// jitter returns a random part of spread. The Acquirer's mu is held.
func (q *queue) jitter() time.Duration {
	if q.spread <= 0 {
		return 0
	}
	return rand.N(q.spread)
}

// measure adapts spread to how long an update took.
func (q *queue) measure(d time.Duration) {
	if d > congestedAfter && d > congestedRTTs*q.rtt {
		q.congest()
		return
	}
	q.spread = max(q.spread-spreadStep, 0)
	if q.rtt == 0 {
		q.rtt = d
	} else {
		q.rtt = (7*q.rtt + d) / 8
	}
}

// reportLater arranges for the rejected tokens no batch carries to be
// reported after reportDelay. a.mu must be held.
func (a *Acquirer) reportLater(q *queue) {
	if q.rejected > 0 && !q.reporting && !a.closed {
		q.reporting = true
		time.AfterFunc(a.reportDelay, func() { a.report(q) })
	}
}

// congest doubles spread, from at least minSpread.
func (q *queue) congest() {
	q.congested = true
	q.spread = min(max(2*q.spread, minSpread), maxSpread)
}

// report sends the rejected tokens no batch has carried, unless a batch is
// in flight (the next one carries them).
func (a *Acquirer) report(q *queue) {
	a.mu.Lock()
	q.reporting = false
	n := q.rejected
	if n == 0 || q.inFlight > 0 || a.closed {
		a.mu.Unlock()
		return
	}
	q.rejected = 0
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), a.opts.Timeout)
	defer cancel()
	if err := a.sendReport(ctx, q.wf, n); err != nil {
		a.mu.Lock()
		q.rejected += n // the next batch carries them
		a.mu.Unlock()
	}
}

func (a *Acquirer) sendReport(ctx context.Context, wf string, rejected int64) error {
	return a.c.SignalWorkflow(ctx, wf, "", workflows.ReportSignal, workflows.Report{Rejected: rejected})
}

// Settle gives back (tokens < 0) or charges (tokens > 0) tokens of the grant
// made to request id by the named bucket, with a settle signal (see
// workflows.Settle): the bucket applies it once, a refund only while the
// window of the grant lasts. A refund of tokens this process handed out of
// a lease goes back to the lease while it lasts.
func (a *Acquirer) Settle(ctx context.Context, bucketName, id string, tokens int64) error {
	return a.SettleKey(ctx, Key{Bucket: bucketName}, id, tokens)
}

// SettleKey is Settle for one key of a keyed bucket.
func (a *Acquirer) SettleKey(ctx context.Context, k Key, id string, tokens int64) error {
	t, err := k.target()
	if err != nil {
		return err
	}
	if id == "" || len(id) > workflows.MaxIDLength || tokens == 0 {
		return nil
	}
	if tokens < 0 {
		a.mu.Lock()
		if q := a.queues[t.wf]; q != nil && q.lease.served[id] > 0 && a.now().Before(q.lease.until) {
			back := min(-tokens, q.lease.served[id])
			q.lease.tokens += back
			delete(q.lease.served, id)
			a.mu.Unlock()
			return nil
		}
		a.mu.Unlock()
	}
	err = a.c.SignalWorkflow(ctx, t.wf, "", workflows.SettleSignal,
		workflows.Settle{ID: settleID(id), Grant: id, Tokens: tokens, Key: k.Key})
	if err != nil {
		return fmt.Errorf("bucket %q: settling %d tokens: %w", k.Bucket, tokens, err)
	}
	return nil
}

var _ KeyedLimiter = (*Acquirer)(nil)

// settleID names the settle-up of a grant: the same for a retry, so the
// bucket applies it once.
func settleID(grant string) string {
	sum := sha256.Sum256([]byte(grant))
	return "settle-" + base64.RawURLEncoding.EncodeToString(sum[:16])
}

var _ Settler = (*Acquirer)(nil)

// giveBack returns a lease's unused tokens. A return that does not reach the
// bucket within the lease's window is ignored there: the tokens are lost,
// never doubled.
func (a *Acquirer) giveBack(ctx context.Context, wf, id string, tokens int64) error {
	return a.c.SignalWorkflow(ctx, wf, "", workflows.ReturnSignal, workflows.Return{ID: id, Tokens: tokens})
}

// Close stops the Acquirer for a graceful stop of the process: callers still
// waiting to be sent, and every later Acquire, get ErrClosed; callers whose
// update is in flight get its answer, or ErrClosed if ctx ends first; then the
// unused tokens of every lease go back to their buckets, and refused tokens
// not yet reported are reported. It returns what failed to reach a bucket.
func (a *Acquirer) Close(ctx context.Context) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	var waiting []*call
	for _, q := range a.queues {
		waiting = append(waiting, q.pending...)
		q.pending = nil
	}
	a.mu.Unlock()
	for _, c := range waiting {
		c.done <- outcome{err: ErrClosed}
	}
	sent := make(chan struct{})
	go func() { a.senders.Wait(); close(sent) }()
	select {
	case <-sent:
	case <-ctx.Done():
		return fmt.Errorf("interceptor: closing: updates still in flight: %w", ctx.Err())
	}

	type leftover struct {
		name, wf, lease string
		tokens, refused int64
	}
	var left []leftover
	a.mu.Lock()
	for _, q := range a.queues {
		l := leftover{name: q.bucket, wf: q.wf, lease: q.lease.id, tokens: q.lease.tokens, refused: q.rejected}
		if q.lease.timer != nil {
			q.lease.timer.Stop()
		}
		q.lease.tokens, q.rejected = 0, 0
		if l.tokens > 0 || l.refused > 0 {
			left = append(left, l)
		}
	}
	a.mu.Unlock()
	var errs []error
	for _, l := range left {
		if l.tokens > 0 {
			if err := a.giveBack(ctx, l.wf, l.lease, l.tokens); err != nil {
				errs = append(errs, fmt.Errorf("bucket %q: giving back %d leased tokens: %w", l.name, l.tokens, err))
			}
		}
		if l.refused > 0 {
			if err := a.sendReport(ctx, l.wf, l.refused); err != nil {
				errs = append(errs, fmt.Errorf("bucket %q: reporting %d refused tokens: %w", l.name, l.refused, err))
			}
		}
	}
	return errors.Join(errs...)
}

// lend keeps the tokens the bucket lent, and gives back what is left of them
// when the lease ends: resp.LeaseFor after sent, less leaseMargin, on this
// process's clock alone. The bucket decided after sent, so the lease ends no
// later than the bucket's window, whatever the two clocks say. a.mu must be held.
func (a *Acquirer) lend(q *queue, id string, resp workflows.AcquireResponse, sent time.Time) {
	until := sent.Add(resp.LeaseFor - leaseMargin)
	q.lease = lease{id: id, tokens: a.opts.Lease, until: until,
		bucket: Decision{Remaining: resp.Tokens, NextRefill: resp.NextRefill, LastRefill: resp.LastRefill}}
	q.lease.timer = time.AfterFunc(until.Sub(a.now()), func() {
		a.mu.Lock()
		left := int64(0)
		if q.lease.id == id {
			left, q.lease.tokens = q.lease.tokens, 0
		}
		a.mu.Unlock()
		if left == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), leaseMargin)
		defer cancel()
		_ = a.giveBack(ctx, q.wf, id, left)
	})
}

// send sends one acquire update, with borrow (a lease request) last if not
// nil, and answers every call in it. It returns the bucket's answer, whether
// it lent the lease, the number of rejected tokens still to report (those
// it was given, unless the update was accepted, plus any the validator
// turned away now), and, when the bucket refused the batch's first valid
// request, how long that request was told to wait.
func (a *Acquirer) send(q *queue, batch []*call, rejected int64, borrow *workflows.AcquireRequest) (resp workflows.AcquireResponse, lent bool, unreported int64, refusedFor time.Duration) {
	reqs := make([]workflows.AcquireRequest, len(batch), len(batch)+1)
	for i, c := range batch {
		reqs[i] = c.req
	}
	if borrow != nil {
		reqs = append(reqs, *borrow)
	}
	resp, err := a.update(q, workflows.AcquireBatch{Requests: reqs, Rejected: rejected, Process: a.process})
	if denied, ok := bucketDenial(err); ok {
		resp, err, unreported = denied, nil, rejected
		for _, c := range batch {
			unreported += c.req.Cost
		}
	} else if err != nil {
		unreported = rejected
	}
	comeback := time.Duration(0) // the latest a refused caller is told to come back
	for i := range min(len(batch), len(resp.Results)) {
		if r := resp.Results[i]; !r.Granted && r.Invalid == "" && err == nil {
			comeback = max(comeback, r.RetryAfter)
		}
	}
	a.mu.Lock()
	q.heard(resp.Processes, comeback, a.now())
	a.mu.Unlock()
	if borrow != nil && err == nil && len(resp.Results) == len(reqs) {
		lent = resp.Results[len(batch)].Granted
	}
	a.mu.Lock()
	offset := q.jitter()
	q.offset = offset
	a.mu.Unlock()
	for i, c := range batch {
		if err != nil {
			c.done <- outcome{err: err}
			continue
		}
		d := Decision{Remaining: resp.Tokens, NextRefill: resp.NextRefill, LastRefill: resp.LastRefill}
		if i < len(resp.Results) {
			r := resp.Results[i]
			if r.Invalid != "" {
				c.done <- outcome{err: temporal.NewNonRetryableApplicationError(
					fmt.Sprintf("bucket %q: %s", q.bucket, r.Invalid), workflows.ErrInvalidRequest, nil)}
				continue
			}
			d.Granted, d.RetryAfter, d.Shadow = r.Granted, r.RetryAfter, r.Shadow
			if r.KeyTokens != nil {
				d.Remaining = *r.KeyTokens
			}
			if !r.Granted {
				if refusedFor == 0 {
					refusedFor = max(r.RetryAfter, minRetryDelay)
				}
				d.RetryAfter += offset // see queue.offset
			}
		}
		c.done <- outcome{d: d}
	}
	return resp, lent, unreported, refusedFor
}

// bucketDenial reports whether err is the acquire validator's RateLimited
// answer, and returns the details it carries. It is false for any other error,
// and for one whose details do not decode: that is an error, not a denial.
func bucketDenial(err error) (workflows.AcquireResponse, bool) {
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrRateLimited {
		return workflows.AcquireResponse{}, false
	}
	var resp workflows.AcquireResponse
	if !appErr.HasDetails() || !details(appErr, &resp) {
		return workflows.AcquireResponse{}, false
	}
	return resp, true
}

// Replaying. go test replays the histories recorded in testdata/histories and
// checks what they decide. A change that makes a recorded history decide
// differently (other commands or command inputs, other update outcomes, another
// continue-as-new input) must be gated with workflow.GetVersion, keeping the
// old path for histories without the marker; when behaviour changes, add a
// history recorded from the new build (testdata/histories/README.md says how).

package workflows

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
)

// How long request and tick IDs are remembered for de-duplication. A retried
// acquire or refill arrives within seconds; these bounds keep the state
// carried across continue-as-new small. Request IDs are also bounded in
// bytes: 8192 of tb's own 22-byte IDs fit, and at most about 3,800 of the
// longest IDs a caller may send (MaxIDLength).
const (
	grantedIDsKept   = 8192
	grantedIDsBytes  = 256 << 10
	grantedIDsMaxAge = time.Minute
	// ledgerMaxAge keeps granted IDs, with the cost a refund may give back,
	// in runs that keep a ledger (changeLedger).
	ledgerMaxAge     = time.Hour
	tickIDsKept      = 512
	tickIDsMaxAge    = 24 * time.Hour
	settledIDsKept   = 4096
	settledIDsMaxAge = time.Hour
	// settledIDsBytes bounds the settle-up and report IDs in bytes: 2048 of
	// tb's own (about 30 bytes), 1024 of the longest a caller may send.
	settledIDsBytes = 64 << 10
)

// BucketWorkflow holds one bucket's tokens. It grants tokens through the
// acquire update, adds them on the refill signal, changes shape through the
// configure update, reports through the state query, and continues as new
// before its history grows large, carrying its whole state.
func BucketWorkflow(ctx workflow.Context, in BucketInput) (Status, error) {
	w, err := newBucketWorkflow(in)
	if err != nil {
		return Status{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrInvalidSpec, err)
	}
	if w.b.Created.IsZero() {
		w.b.Created = workflow.Now(ctx)
	}
	w.ledger = workflow.GetVersion(ctx, changeLedger, workflow.DefaultVersion, 1) >= 1
	if w.b.Heal(workflow.Now(ctx)) {
		workflow.GetLogger(ctx).Warn("Forgot a refill tick from the future carried by the previous run", "bucket", in.Spec.Name)
	}
	if err := w.register(ctx); err != nil {
		return Status{}, err
	}
	w.observe(ctx) // each run's gauges from its start, not its first change
	sig := signals{
		refills:   workflow.GetSignalChannel(ctx, RefillSignal),
		returns:   workflow.GetSignalChannel(ctx, ReturnSignal),
		reports:   workflow.GetSignalChannel(ctx, ReportSignal),
		settles:   workflow.GetSignalChannel(ctx, SettleSignal),
		upstreams: workflow.GetSignalChannel(ctx, UpstreamSignal),
	}
	for {
		err := workflow.Await(ctx, func() bool {
			return sig.waiting() || w.retired || w.shouldContinueAsNew(ctx)
		})
		if err != nil {
			return w.status(ctx), err
		}
		w.drain(ctx, sig)
		if !w.retired && !w.shouldContinueAsNew(ctx) {
			continue
		}
		// Let every handler finish, then take the signals that arrived meanwhile.
		if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
			return w.status(ctx), err
		}
		w.drain(ctx, sig)
		if w.retired {
			return w.status(ctx), nil
		}
		if q := w.b.Spec().TaskQueue; q != "" {
			ctx = workflow.WithWorkflowTaskQueue(ctx, q)
		}
		return Status{}, workflow.NewContinueAsNewError(ctx, BucketWorkflowType, w.next(ctx))
	}
}

type bucketWorkflow struct {
	in      BucketInput
	b       *bucket.Bucket
	updates int // accepted in this run
	retired bool
	ledger  bool // see changeLedger
	// shadowLogged is the window of the latest shadow-mode log line.
	shadowLogged time.Time
	// comebacks paces the batches the validator refuses. It is not workflow
	// state: only refusals, which write no history, read or change it,
	// nothing recorded depends on it, and a replay starts it from zero.
	comebacks bucket.Comebacks
	// accepted counts the processes whose batches were accepted: the hint in
	// accepted answers, which are recorded, and which a replay of the run
	// gives again. asking counts every batch's process, the validator's
	// refusals too: the hint in refusals, which are not recorded. Like
	// comebacks, asking is not workflow state: nothing recorded depends on
	// it, and a replay counts the accepted batches alone. See fleet.
	accepted, asking fleet
}

func newBucketWorkflow(in BucketInput) (*bucketWorkflow, error) {
	var (
		b   *bucket.Bucket
		err error
	)
	if in.State != nil {
		b, err = bucket.Restore(in.Spec, *in.State)
	} else {
		b, err = bucket.New(in.Spec)
	}
	if err != nil {
		return nil, err
	}
	if in.MaxUpdatesPerRun <= 0 {
		in.MaxUpdatesPerRun = DefaultMaxUpdatesPerRun
	}
	in.granted.reindex()
	in.ticks.reindex()
	in.settled.reindex()
	return &bucketWorkflow{in: in, b: b}, nil
}

func (w *bucketWorkflow) register(ctx workflow.Context) error {
	if err := workflow.SetUpdateHandlerWithOptions(ctx, AcquireUpdate, w.acquire,
		workflow.UpdateHandlerOptions{Validator: w.validateAcquire}); err != nil {
		return err
	}
	if err := workflow.SetUpdateHandlerWithOptions(ctx, ConfigureUpdate, w.configure,
		workflow.UpdateHandlerOptions{Validator: w.validateConfigure}); err != nil {
		return err
	}
	if err := workflow.SetUpdateHandler(ctx, RetireUpdate, w.retire); err != nil {
		return err
	}
	if err := workflow.SetQueryHandler(ctx, KeyQuery, func(key string) (KeyStatus, error) {
		if !w.keyed() {
			return KeyStatus{}, fmt.Errorf("bucket %q is not keyed", w.b.Spec().Name)
		}
		now := workflow.Now(ctx)
		return w.keyStatus(w.b.Due(now), now, key), nil
	}); err != nil {
		return err
	}
	return workflow.SetQueryHandler(ctx, StateQuery, func() (Status, error) { return w.status(ctx), nil })
}

// shouldContinueAsNew: when Temporal suggests it, well before the limit on
// updates per run, or to move to the task queue a reconfiguration named.
func (w *bucketWorkflow) shouldContinueAsNew(ctx workflow.Context) bool {
	info := workflow.GetInfo(ctx)
	if q := w.b.Spec().TaskQueue; q != "" && q != info.TaskQueueName {
		return true
	}
	return w.updates >= w.in.MaxUpdatesPerRun || info.GetContinueAsNewSuggested()
}

// classify returns the cost to charge for each request: 0 (never granted) for
// a duplicate of a granted request or an invalid one, which get their outcome here.
func (w *bucketWorkflow) classify(batch AcquireBatch) (costs []int64, outcomes []Outcome, duplicates int) {
	costs = make([]int64, len(batch.Requests))
	outcomes = make([]Outcome, len(batch.Requests))
	inBatch := make(map[string]bool, len(batch.Requests))
	maximum := w.b.Spec().Maximum
	for i, r := range batch.Requests {
		switch {
		case r.ID == "":
			outcomes[i].Invalid = "request id is required"
		case len(r.ID) > MaxIDLength:
			outcomes[i].Invalid = fmt.Sprintf("request id is %d bytes long; the most is %d", len(r.ID), MaxIDLength)
		case inBatch[r.ID]:
			outcomes[i].Invalid = fmt.Sprintf("request id %q appears twice in one batch", r.ID)
		case w.in.granted.has(r.ID):
			outcomes[i].Granted = true
			duplicates++
		case w.checkKey(r) != "":
			outcomes[i].Invalid = w.checkKey(r)
		case w.keyed() && r.Optional:
			outcomes[i].Invalid = "a keyed bucket lends no lease"
		default:
			if err := bucket.CheckCost(r.Cost, maximum); err != nil {
				outcomes[i].Invalid = err.Error()
			} else if !r.Optional { // leases are lent after the rest, see acquire
				costs[i] = r.Cost
			}
		}
		inBatch[r.ID] = true
	}
	return costs, outcomes, duplicates
}

// validateAcquire turns a batch away, writing no history, when none of it can
// be granted now: the common case of an empty bucket.
func (w *bucketWorkflow) validateAcquire(ctx workflow.Context, batch AcquireBatch) error {
	switch n := len(batch.Requests); {
	case n == 0:
		return invalidRequest("an acquire batch holds no requests")
	case n > MaxBatch:
		return invalidRequest(fmt.Sprintf("an acquire batch holds %d requests; the most is %d", n, MaxBatch))
	case !slices.ContainsFunc(batch.Requests, func(r AcquireRequest) bool { return !r.Optional }):
		return invalidRequest("an acquire batch holds only optional requests")
	case batch.Rejected < 0:
		return invalidRequest(fmt.Sprintf("an acquire batch reports %d rejected tokens; the count cannot be negative", batch.Rejected))
	case w.retired:
		return temporal.NewApplicationError(fmt.Sprintf("bucket %q is retired", w.b.Spec().Name), ErrUnknownBucket)
	}
	costs, outcomes, duplicates := w.classify(batch)
	if duplicates > 0 {
		return nil
	}
	now := workflow.Now(ctx)
	b := w.b.Due(now) // a validator may not change the bucket: decide on a copy
	var ok bool
	var waits []time.Duration
	var keyTokens []int64
	if w.keyed() {
		ok, waits, keyTokens = w.checkKeyed(b, now, batch, costs)
	} else {
		ok, waits = b.Check(now, costs)
	}
	if ok {
		return nil
	}
	valid, first := 0, -1
	later := time.Duration(0)
	for i := range outcomes {
		if outcomes[i].Invalid == "" {
			if first < 0 {
				first = i
			}
			// The refused come back one after another (see bucket.Comebacks).
			// Not a keyed shard's: its refusals are per key, and one tenant
			// would wait behind the refusals of others.
			if valid == 0 && !w.keyed() {
				later = w.comebacks.Next(b.NextRefill(now))
			}
			outcomes[i].RetryAfter = waits[i] + later
			if keyTokens != nil {
				outcomes[i].KeyTokens = &keyTokens[i]
			}
			valid++
		}
	}
	if valid == 0 {
		return invalidRequest(outcomes[0].Invalid)
	}
	w.asking.see(batch.Process, now)
	resp := AcquireResponse{Bucket: b.Spec().Name, Results: outcomes, Tokens: b.Tokens, NextRefill: b.NextRefill(now), LastRefill: b.LastRefill,
		Processes: w.asking.count(now)}
	// The message tells of the first valid request: of its key's tokens on a
	// keyed shard (the shard's own count means nothing to a caller).
	who, tokens := fmt.Sprintf("bucket %q", b.Spec().Name), b.Tokens
	if keyTokens != nil {
		who, tokens = fmt.Sprintf("bucket %q, key %q", b.Spec().Name, batch.Requests[first].Key), keyTokens[first]
	}
	return temporal.NewApplicationErrorWithOptions(
		fmt.Sprintf("%s: %d tokens left, next refill expected in %v", who, tokens, outcomes[first].RetryAfter.Round(time.Millisecond)),
		ErrRateLimited,
		temporal.ApplicationErrorOptions{Details: []any{resp}, Category: temporal.ApplicationErrorCategoryBenign})
}

// acquire grants requests in order while tokens last.
func (w *bucketWorkflow) acquire(ctx workflow.Context, batch AcquireBatch) (AcquireResponse, error) {
	w.updates++
	now := workflow.Now(ctx)
	w.applyDue(ctx, now)
	costs, outcomes, _ := w.classify(batch)
	wouldDeny := w.b.WouldDeny
	var results []bucket.Result
	var keyTokens []int64
	if w.keyed() {
		results, keyTokens = w.takeKeyed(now, batch, costs)
	} else {
		results = w.b.Take(now, costs)
	}
	for i, r := range results {
		if keyTokens != nil && costs[i] > 0 {
			outcomes[i].KeyTokens = &keyTokens[i]
		}
		switch {
		case r.Granted:
			outcomes[i].Granted, outcomes[i].Shadow = true, r.Shadow
			if w.ledger {
				w.in.granted.addCost(batch.Requests[i].ID, now, costs[i])
			} else {
				w.in.granted.add(batch.Requests[i].ID, now)
			}
		case costs[i] > 0:
			outcomes[i].RetryAfter = r.RetryAfter
		}
	}
	var leaseFor time.Duration
	for i, r := range batch.Requests {
		if r.Optional && outcomes[i].Invalid == "" && !outcomes[i].Granted {
			if w.b.Lend(now, r.ID, r.Cost) {
				outcomes[i].Granted = true
				w.in.granted.add(r.ID, now)
				leaseFor = w.b.NextTick().Sub(now)
			}
			break // one lease per batch
		}
	}
	if n := w.b.WouldDeny - wouldDeny; n > 0 {
		w.metrics(ctx).Counter(MetricWouldDeny).Inc(n)
		if w.shadowLogged != w.b.LastTick {
			w.shadowLogged = w.b.LastTick // once per refill window
			workflow.GetLogger(ctx).Info("Shadow mode: let through what enforcing would refuse", "bucket", w.b.Spec().Name, "tokens", n, "wouldDenyTotal", w.b.WouldDeny)
		}
	}
	w.b.CountDenied(batch.Rejected)
	if w.in.granted.len() > grantedIDsKept*5/4 || w.in.granted.size() > grantedIDsBytes*5/4 {
		w.in.granted.trim(now, w.grantedMaxAge(), grantedIDsKept, grantedIDsBytes)
	}
	w.accepted.see(batch.Process, now)
	w.asking.see(batch.Process, now)
	resp := AcquireResponse{Results: outcomes, Tokens: w.b.Tokens, NextRefill: w.b.NextRefill(now), LastRefill: w.b.LastRefill, NextTick: w.b.NextTick(),
		Processes: w.accepted.count(now)}
	if leaseFor > 0 && workflow.GetVersion(ctx, changeLeaseFor, workflow.DefaultVersion, 1) >= 1 {
		resp.LeaseFor = leaseFor
	}
	w.observe(ctx)
	return resp, nil
}

func (w *bucketWorkflow) validateConfigure(spec bucket.Spec) error {
	if spec.Name != w.b.Spec().Name {
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("bucket %q cannot be reconfigured as %q", w.b.Spec().Name, spec.Name), ErrInvalidSpec, nil)
	}
	if err := spec.Validate(); err != nil {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrInvalidSpec, err)
	}
	return nil
}

// configure changes amount, maximum and schedule, keeping the tokens (clamped to a lowered maximum).
func (w *bucketWorkflow) configure(ctx workflow.Context, spec bucket.Spec) (Status, error) {
	w.updates++
	w.applyDue(ctx, workflow.Now(ctx))
	if err := w.b.Reconfigure(spec); err != nil {
		return Status{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrInvalidSpec, err)
	}
	w.in.Spec = spec
	w.observe(ctx)
	if err := workflow.UpsertMemo(ctx, map[string]any{SpecMemo: spec}); err != nil {
		return Status{}, err
	}
	return w.status(ctx), nil
}

// retire ends the bucket workflow; tb sync-schedules uses it for buckets removed from buckets.yaml.
func (w *bucketWorkflow) retire(ctx workflow.Context) (Status, error) {
	w.updates++
	w.retired = true
	return w.status(ctx), nil
}

// grantedMaxAge is how long a granted request ID is remembered.
func (w *bucketWorkflow) grantedMaxAge() time.Duration {
	if w.ledger {
		return ledgerMaxAge
	}
	return grantedIDsMaxAge
}

// signals are the channels of the signals a bucket takes.
type signals struct {
	refills, returns, reports, settles, upstreams workflow.ReceiveChannel
}

func (s signals) waiting() bool {
	return s.refills.Len() > 0 || s.returns.Len() > 0 || s.reports.Len() > 0 || s.settles.Len() > 0 || s.upstreams.Len() > 0
}

// drain applies every signal waiting.
func (w *bucketWorkflow) drain(ctx workflow.Context, s signals) {
	w.applyDue(ctx, workflow.Now(ctx))
	var r Refill
	for s.refills.ReceiveAsync(&r) {
		w.refill(ctx, r)
		r = Refill{}
	}
	var ret Return
	for s.returns.ReceiveAsync(&ret) {
		w.takeBack(ctx, ret)
		ret = Return{}
	}
	var rep Report
	for s.reports.ReceiveAsync(&rep) {
		w.b.CountDenied(rep.Rejected)
		rep = Report{}
	}
	var set Settle
	for s.settles.ReceiveAsync(&set) {
		w.settle(ctx, set)
		set = Settle{}
	}
	var up Upstream
	for s.upstreams.ReceiveAsync(&up) {
		w.upstream(ctx, up)
		up = Upstream{}
	}
	w.observe(ctx)
}

// upstream applies what the upstream said, once per report: a pause, and a
// count of what is left.
func (w *bucketWorkflow) upstream(ctx workflow.Context, u Upstream) {
	now := workflow.Now(ctx)
	if u.ID == "" || len(u.ID) > MaxIDLength || w.in.settled.has(u.ID) {
		return
	}
	w.rememberSettled(u.ID, now)
	m := w.metrics(ctx)
	if w.keyed() && u.Key != "" {
		if bucket.CheckKey(u.Key) != nil || bucket.KeyShard(u.Key, w.b.Spec().ShardCount()) != w.in.Shard {
			return
		}
		kb, kp := w.keyFor(u.Key)
		if u.PauseFor > 0 && kb.Pause(now, now.Add(u.PauseFor)) {
			m.Counter(MetricPauses).Inc(1)
			w.b.Pauses++
		}
		if u.Remaining != nil && kb.Calibrate(*u.Remaining) {
			m.Counter(MetricCalibrations).Inc(1)
			w.b.Calibrations++
		}
		w.put(u.Key, kb, kp, now)
		return
	}
	if u.PauseFor > 0 && w.b.Pause(now, now.Add(u.PauseFor)) {
		m.Counter(MetricPauses).Inc(1)
		workflow.GetLogger(ctx).Info("Paused: the upstream asked callers to come back later", "bucket", w.b.Spec().Name, "until", w.b.PausedUntil)
	}
	if u.Remaining != nil && w.b.Calibrate(*u.Remaining) {
		m.Counter(MetricCalibrations).Inc(1)
	}
}

// settle applies a settle signal once: a refund of a grant of the current
// window, no more than it cost, or a charge (see Settle).
func (w *bucketWorkflow) settle(ctx workflow.Context, s Settle) {
	now := workflow.Now(ctx)
	if s.ID == "" || len(s.ID) > MaxIDLength || w.in.settled.has(s.ID) {
		return
	}
	b, kp := w.b, (*bucket.KeyState)(nil)
	if w.keyed() {
		if bucket.CheckKey(s.Key) != nil || bucket.KeyShard(s.Key, w.b.Spec().ShardCount()) != w.in.Shard {
			return
		}
		b, kp = w.keyFor(s.Key)
	}
	switch {
	case s.Tokens < 0:
		n, late := w.in.granted.take(s.Grant, w.b.LastTick, -s.Tokens)
		w.metrics(ctx).Counter(MetricRefunded).Inc(b.Refund(n))
		b.Unrefunded = min(b.Unrefunded+late, math.MaxInt64-1)
	case s.Tokens > 0:
		b.Charge(s.Tokens)
		w.metrics(ctx).Counter(MetricCharged).Inc(s.Tokens)
	}
	if w.keyed() {
		w.put(s.Key, b, kp, now)
	}
	w.rememberSettled(s.ID, now)
}

// takeBack applies a return; the lease it names ends with it.
func (w *bucketWorkflow) takeBack(ctx workflow.Context, r Return) {
	w.b.Return(workflow.Now(ctx), r.ID, r.Tokens)
}

func (w *bucketWorkflow) refill(ctx workflow.Context, r Refill) {
	now := workflow.Now(ctx)
	if r.ID != "" && w.in.ticks.has(r.ID) {
		// Applied already: a retry, or a tick the bucket applied by itself.
		w.authorize(ctx, now, r.Tick)
		return
	}
	if len(r.ID) > MaxIDLength || w.b.FutureTick(now, r.Tick) {
		// No Schedule sends these: a backfill over a future range, or a hand-sent signal.
		w.b.Ignored++
		workflow.GetLogger(ctx).Warn("Ignored a refill signal", "bucket", w.b.Spec().Name,
			"tick", r.Tick, "idBytes", len(r.ID), "reason", "a tick later than now plus "+bucket.TickAllowance.String()+", or an ID longer than the most allowed")
		return
	}
	amount := r.Amount
	if amount <= 0 {
		amount = w.b.Spec().Amount
	}
	if r.Key != "" {
		// A manual refill of one key of a keyed bucket.
		if r.Tick.IsZero() && w.keyed() && bucket.CheckKey(r.Key) == nil && bucket.KeyShard(r.Key, w.b.Spec().ShardCount()) == w.in.Shard {
			kb, kp := w.keyFor(r.Key)
			kb.Refill(now, time.Time{}, amount)
			w.put(r.Key, kb, kp, now)
			w.b.LastRefill = now // the shard's latest refill, of any key: what tb refill --key waits for
			if r.ID != "" {
				w.rememberTick(r.ID, now)
			}
		}
		return
	}
	w.b.Refill(now, r.Tick, amount)
	w.metrics(ctx).Counter(MetricRefills).Inc(1)
	if !r.Tick.IsZero() {
		w.metrics(ctx).Timer(MetricRefillLag).Record(max(now.Sub(r.Tick), 0))
	}
	if r.ID != "" {
		w.rememberTick(r.ID, now)
	}
	w.authorize(ctx, now, r.Tick)
}

// authorize lets the bucket apply the ticks after a scheduled tick by itself
// (bucket.Bucket.Authorize), and applies those that are due.
func (w *bucketWorkflow) authorize(ctx workflow.Context, now, tick time.Time) {
	if tick.IsZero() || w.b.FutureTick(now, tick) || workflow.GetVersion(ctx, changeAuthorizeNext, workflow.DefaultVersion, 1) < 1 {
		return
	}
	if workflow.GetVersion(ctx, changeAuthorizeLead, workflow.DefaultVersion, 1) < 1 {
		w.b.AuthorizeNext(tick)
	} else {
		w.b.Authorize(tick)
	}
	w.applyDue(ctx, now)
}

// applyDue applies the authorized ticks now has passed, remembering each
// under the ID its refill workflow signals, so that refill changes nothing
// but the authorization it carries.
func (w *bucketWorkflow) applyDue(ctx workflow.Context, now time.Time) {
	for _, tick := range w.b.ApplyDue(now) {
		w.rememberTick(tickID(tick), now)
		w.metrics(ctx).Counter(MetricRefills).Inc(1)
		w.metrics(ctx).Timer(MetricRefillLag).Record(0) // applied as of its tick, whenever the bucket is next asked
	}
}

// metrics is the workflow's metrics handler, tagged with the bucket: it
// records nothing while the workflow replays.
func (w *bucketWorkflow) metrics(ctx workflow.Context) client.MetricsHandler {
	return workflow.GetMetricsHandler(ctx).WithTags(map[string]string{MetricTagBucket: w.b.Spec().Name})
}

// observe records the bucket's gauges.
func (w *bucketWorkflow) observe(ctx workflow.Context) {
	m := w.metrics(ctx)
	if w.keyed() {
		m.WithTags(map[string]string{MetricTagShard: strconv.Itoa(w.in.Shard)}).Gauge(MetricKeys).Update(float64(len(w.in.keys)))
		return
	}
	m.Gauge(MetricTokens).Update(float64(w.b.Tokens))
	m.Gauge(MetricDebt).Update(float64(w.b.Debt))
	paused := 0.0
	if w.b.Paused(workflow.Now(ctx)) {
		paused = 1
	}
	m.Gauge(MetricPaused).Update(paused)
}

// rememberSettled remembers a settle-up's or a report's ID, so that it is
// applied once; past a quarter over their bounds the oldest are forgotten.
func (w *bucketWorkflow) rememberSettled(id string, now time.Time) {
	w.in.settled.add(id, now)
	if w.in.settled.len() > settledIDsKept*5/4 || w.in.settled.size() > settledIDsBytes*5/4 {
		w.in.settled.trim(now, settledIDsMaxAge, settledIDsKept, settledIDsBytes)
	}
}

func (w *bucketWorkflow) rememberTick(id string, now time.Time) {
	w.in.ticks.add(id, now)
	if w.in.ticks.len() > tickIDsKept*5/4 {
		w.in.ticks.trim(now, tickIDsMaxAge, tickIDsKept, 0)
	}
}

// next returns the input of the next run: this run's whole state.
func (w *bucketWorkflow) next(ctx workflow.Context) BucketInput {
	now := workflow.Now(ctx)
	w.applyDue(ctx, now)
	w.dropResting(now)
	in := w.in
	st := w.b.State
	in.State = &st
	in.run++
	in.granted.trim(now, w.grantedMaxAge(), grantedIDsKept, grantedIDsBytes)
	in.ticks.trim(now, tickIDsMaxAge, tickIDsKept, 0)
	in.settled.trim(now, settledIDsMaxAge, settledIDsKept, settledIDsBytes)
	return in
}

func (w *bucketWorkflow) status(ctx workflow.Context) Status {
	now := workflow.Now(ctx)
	b := w.b.Due(now) // a query may not change the bucket
	st := Status{
		Spec:       b.Spec(),
		State:      b.State,
		NextRefill: b.NextRefill(now),
		Run:        w.in.run,
		Updates:    w.updates,
	}
	if w.keyed() {
		st.Keys, st.Emptiest = w.keysStatus(b, now)
	}
	return st
}

func invalidRequest(msg string) error {
	return temporal.NewNonRetryableApplicationError(msg, ErrInvalidRequest, nil)
}

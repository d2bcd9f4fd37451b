package bucket

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Forecast tuning. A refill that is due but has not arrived yet is expected
// within LateRefillRetry for LateRefillGrace after its nominal time (plus the
// usual lag); after that it is taken as missed and the next tick is expected.
const (
	LateRefillRetry = 100 * time.Millisecond
	LateRefillGrace = 2 * time.Second
	// MaxRefillLag caps the measured delay between a tick's nominal time and
	// its arrival, so a catch-up tick after an outage does not skew forecasts.
	MaxRefillLag = 2 * time.Second
	// NeverRetryAfter is the retry-after given when the schedule never fires again.
	NeverRetryAfter = 24 * time.Hour
	// TickAllowance is how far ahead of the bucket's clock a scheduled tick
	// may lie. A Schedule starts a refill at or after its tick, so a tick
	// further ahead comes from a backfill over a future range or a hand-sent
	// signal: taking it would push every forecast past it.
	TickAllowance = 10 * time.Second
	// MaxLead bounds how far ahead a scheduled refill authorizes the next one
	// (see [Bucket.Authorize]): a bucket whose ticks are further apart waits
	// for each tick's own refill, so pausing its Schedule stops it at once.
	MaxLead = 10 * time.Minute
	// AuthorizeLead is how far past its own tick a scheduled refill
	// authorizes the ticks after it (see [Bucket.Authorize]); it always
	// authorizes the next one. A tick then applies on time if any refill
	// before it, within the lead, has arrived: refills up to 2 s late cost
	// nothing at any period (up to 3 s at @every 1s, a period at longer
	// ones). Pausing the Schedule stops the refills after at most the ticks
	// authorized: those within AuthorizeLead after the latest refill's tick,
	// or the next one.
	AuthorizeLead = 3 * time.Second
	// MaxLeases bounds State.Leases. Beyond it the oldest record is dropped:
	// a return for it is then ignored, so its unused tokens are lost, never
	// doubled. An acquirer holds one lease per bucket at a time, so only more
	// than MaxLeases processes borrowing in one window lose anything.
	MaxLeases = 64

	maxForecastTicks = 10_000
)

// State is what a bucket remembers between requests. It is a plain value so
// that it can be carried across continue-as-new.
type State struct {
	// Tokens available now; 0 ≤ Tokens ≤ Maximum.
	Tokens int64 `json:"tokens"`
	// LastTick is the nominal time of the latest scheduled refill applied.
	LastTick time.Time `json:"lastTick,omitzero"`
	// LastRefill is when the latest refill of any kind was applied.
	LastRefill time.Time `json:"lastRefill,omitzero"`
	// RefillLag is the smoothed delay between a tick's nominal time and its
	// arrival, and RefillJitter the smoothed deviation from it.
	RefillLag    time.Duration `json:"refillLag,omitempty"`
	RefillJitter time.Duration `json:"refillJitter,omitempty"`
	// Created is when the bucket was created.
	Created time.Time `json:"created,omitzero"`
	// Ticks counts the scheduled ticks a keyed bucket has applied; each key
	// records the count it was last brought up to date at (KeyState.Tick).
	// Unkeyed buckets leave it at zero.
	Ticks int64 `json:"ticks,omitempty"`
	// Late lists grants made after a scheduled refill fell due, before it
	// arrived; at most maxSpends entries.
	Late []Spend `json:"late,omitempty"`
	// Leases lists the tokens lent since the latest refill, by lease ID; at
	// most MaxLeases entries.
	Leases []Lease `json:"leases,omitempty"`
	// Granted and Denied count tokens granted and refused over the bucket's
	// life, saturating at math.MaxInt64.
	Granted int64 `json:"granted"`
	Denied  int64 `json:"denied"`
	// Ignored counts refills refused: a tick beyond TickAllowance, or an ID
	// too long to remember.
	Ignored int64 `json:"ignored,omitempty"`
	// Debt is tokens charged beyond what the bucket held (see Charge); the
	// next refills pay it before they add tokens. At most Maximum.
	Debt int64 `json:"debt,omitempty"`
	// Refunded counts tokens given back by refunds, and Charged tokens taken
	// by charges, apart from Granted (saturating at math.MaxInt64).
	Refunded int64 `json:"refunded,omitempty"`
	Charged  int64 `json:"charged,omitempty"`
	// Unrefunded counts tokens of grants whose refund came after the window
	// they were granted in had ended: the refill that began the next window
	// restored the bucket already, so they are not given back.
	Unrefunded int64 `json:"unrefunded,omitempty"`
	// PausedUntil is when a pause the upstream asked for ends (see Pause):
	// until then the bucket grants nothing. Pauses counts pauses begun,
	// Calibrations the times an upstream's count lowered the tokens.
	PausedUntil  time.Time `json:"pausedUntil,omitzero"`
	Pauses       int64     `json:"pauses,omitempty"`
	Calibrations int64     `json:"calibrations,omitempty"`
	// WouldDeny counts, in shadow mode, tokens the bucket let through that
	// it would have refused: Granted and Tokens follow what enforcing would
	// have done.
	WouldDeny int64 `json:"wouldDeny,omitempty"`
	// Until is the latest tick the bucket may apply by itself, when its time
	// comes, without waiting for that tick's refill: the refill of the tick
	// before authorized it (see [Bucket.Authorize]). Zero until a refill does.
	Until time.Time `json:"until,omitzero"`
}

// A Result is the outcome of one request.
type Result struct {
	// Granted reports whether the tokens were taken.
	Granted bool `json:"granted"`
	// Remaining is the number of tokens left once this request was handled.
	Remaining int64 `json:"remaining"`
	// Shadow reports that the request was granted only because the bucket is
	// in shadow mode: enforcing, it would have been refused.
	Shadow bool `json:"shadow,omitempty"`
	// RetryAfter is, when not granted, how long until the bucket is expected to
	// hold this request's tokens, counting the requests ahead of it.
	RetryAfter time.Duration `json:"retryAfter,omitempty"`
}

// A Bucket is a token bucket: a spec, its parsed schedule and its state.
// Methods take the current time; a Bucket never reads the clock.
type Bucket struct {
	State
	spec  Spec
	sched *Schedule
}

// New returns a full bucket, or one holding spec.Initial tokens when set.
func New(spec Spec) (*Bucket, error) {
	return Restore(spec, State{Tokens: spec.InitialTokens()})
}

// Restore returns a bucket with the given state, its tokens clamped to [0,
// spec.Maximum]. It reads the spec as a bucket carries it: one an earlier
// version of tb accepted keeps running (a Local zone is read as UTC), so a
// stricter Validate never stops a running bucket. New specs must pass Validate.
func Restore(spec Spec, st State) (*Bucket, error) {
	spec, sched, err := readCarried(spec)
	if err != nil {
		return nil, err
	}
	b := &Bucket{State: st, spec: spec, sched: sched}
	b.Tokens = clamp(b.Tokens, 0, spec.Maximum)
	return b, nil
}

// Spec returns the bucket's spec.
func (b *Bucket) Spec() Spec { return b.spec }

// Schedule returns the bucket's parsed refill schedule.
func (b *Bucket) Schedule() *Schedule { return b.sched }

// Reconfigure changes amount, maximum and schedule, keeping the tokens
// (clamped to a lowered maximum). The name cannot change.
func (b *Bucket) Reconfigure(spec Spec) error {
	if spec.Name != b.spec.Name {
		return fmt.Errorf("bucket %q cannot be renamed to %q", b.spec.Name, spec.Name)
	}
	if spec.Keyed != b.spec.Keyed || spec.ShardCount() != b.spec.ShardCount() {
		// A key's shard follows from the shard count: its tokens cannot follow it.
		return fmt.Errorf("bucket %q cannot change from %s to %s in place", b.spec.Name, keying(b.spec), keying(spec))
	}
	nb, err := Restore(spec, b.State)
	if err != nil {
		return err
	}
	if nb.sched.String() != b.sched.String() || nb.sched.TimeZone() != b.sched.TimeZone() {
		nb.Until = time.Time{} // authorized on the old schedule's ticks
	}
	*b = *nb
	return nil
}

// keying describes how a spec holds its tokens, e.g. "keyed with 8 shards".
func keying(s Spec) string {
	if !s.Keyed {
		return "unkeyed"
	}
	return fmt.Sprintf("keyed with %d shards", s.ShardCount())
}

// Refill adds amount tokens, capped at the maximum, and returns how many were
// added. tick is the nominal time of a scheduled refill, or zero for a manual one.
//
// A scheduled refill applies as of its tick. A provider that resets its quota
// on the tick counts calls made after the tick, but before the refill reached
// the bucket, against the new window; so do the tokens: the bucket is topped
// up as it stood at the tick, and those late grants are then taken from it.
//
// A tick later than now plus TickAllowance is refused: Refill returns 0 and
// changes nothing but the Ignored count (see [Bucket.FutureTick]).
func (b *Bucket) Refill(now, tick time.Time, amount int64) int64 {
	if b.FutureTick(now, tick) {
		b.Ignored = addSat(b.Ignored, 1)
		return 0
	}
	return b.refill(now, tick, amount, true)
}

// refill applies a refill; measured says whether it arrived from outside (a
// signal), whose lag after its tick the forecasts learn from.
func (b *Bucket) refill(now, tick time.Time, amount int64, measured bool) int64 {
	before := b.Tokens
	amount = clamp(amount, 0, MaxTokens)
	late := b.lateSpend(tick)
	b.Tokens = max(0, min(b.spec.Maximum, b.Tokens+late+amount)-late)
	pay := min(b.Debt, b.Tokens) // a debt is paid before tokens are handed out again
	b.Tokens -= pay
	b.Debt -= pay
	b.LastRefill = now
	b.Leases = nil // lent in a window that has ended: no longer returnable
	if !tick.IsZero() && tick.After(b.LastTick) {
		b.LastTick = tick
		b.trimLateSpend()
		if b.spec.Keyed {
			b.Ticks = addSat(b.Ticks, 1)
		}
	}
	if !tick.IsZero() && measured {
		lag := clamp(now.Sub(tick), 0, MaxRefillLag)
		if b.RefillLag == 0 {
			b.RefillLag = lag
		} else {
			b.RefillJitter = (b.RefillJitter + (lag - b.RefillLag).Abs()) / 2
			b.RefillLag = (b.RefillLag + lag) / 2
		}
	}
	return b.Tokens - before
}

// Authorize lets the bucket apply the scheduled ticks after tick by itself
// when their time comes (see [Bucket.ApplyDue]): the next one, if it is at
// most MaxLead after tick, and every later one within AuthorizeLead of tick.
// The refill workflow of each tick authorizes those after it, so a bucket
// refills exactly on its ticks however late its Schedule starts the refills,
// as long as, for each tick, a refill of one of the ticks it follows by at
// most that much arrives before it. Pausing the Schedule stops the refills
// after the ticks already authorized.
func (b *Bucket) Authorize(tick time.Time) { b.authorize(tick, AuthorizeLead) }

// AuthorizeNext authorizes the next tick after tick only, if it is at most
// MaxLead after it: what [Bucket.Authorize] did before AuthorizeLead, kept
// for bucket workflows that still run on that rule.
func (b *Bucket) AuthorizeNext(tick time.Time) { b.authorize(tick, 0) }

func (b *Bucket) authorize(tick time.Time, lead time.Duration) {
	until := b.sched.Next(tick)
	if until.IsZero() || until.Sub(tick) > MaxLead {
		return
	}
	for range maxForecastTicks {
		next := b.sched.Next(until)
		if next.IsZero() || next.Sub(tick) > lead {
			break
		}
		until = next
	}
	if until.After(b.Until) {
		b.Until = until
	}
}

// ApplyDue applies, as of their ticks, the authorized ticks that now has
// passed and no refill has applied yet, and returns them.
func (b *Bucket) ApplyDue(now time.Time) []time.Time {
	var applied []time.Time
	for ticks := 0; !b.Until.IsZero() && ticks < maxForecastTicks; ticks++ {
		next := b.sched.Next(b.tickBase())
		if next.IsZero() || next.After(b.Until) || next.After(now) {
			break
		}
		b.refill(next, next, b.spec.Amount, false)
		applied = append(applied, next)
	}
	return applied
}

// Due returns a copy of the bucket with its due authorized ticks applied, for
// a caller that may not change the bucket (an update validator, a query).
// It is the bucket itself when no tick is due.
func (b *Bucket) Due(now time.Time) *Bucket {
	if next := b.sched.Next(b.tickBase()); b.Until.IsZero() || next.IsZero() || next.After(b.Until) || next.After(now) {
		return b
	}
	c := *b
	c.Late = slices.Clone(b.Late)
	c.Leases = slices.Clone(b.Leases)
	c.ApplyDue(now)
	return &c
}

// FutureTick reports whether tick lies beyond now plus TickAllowance: no
// Schedule delivers such a tick on its own.
func (b *Bucket) FutureTick(now, tick time.Time) bool {
	return tick.After(now.Add(TickAllowance))
}

// Heal repairs a state that a build without today's checks could carry: a
// LastTick from the future (which would push every forecast past it) is
// forgotten, so the next refill sets it again. It reports whether it changed anything.
func (b *Bucket) Heal(now time.Time) bool {
	healed := false
	if b.FutureTick(now, b.LastTick) {
		b.LastTick = time.Time{}
		healed = true
	}
	if b.Until.After(now.Add(MaxLead + TickAllowance)) {
		b.Until = time.Time{}
		healed = true
	}
	if b.PausedUntil.After(now.Add(MaxPause)) {
		b.PausedUntil = time.Time{}
		healed = true
	}
	return healed
}

// Check reports whether the first valid request of costs can be granted now,
// without changing the bucket. When it cannot, it also returns, for each
// request, how long until its tokens are expected (0 for invalid costs).
func (b *Bucket) Check(now time.Time, costs []int64) (bool, []time.Duration) {
	valid := b.validIndexes(costs)
	if len(valid) > 0 && (b.spec.Shadow() || costs[valid[0]] <= b.Tokens && !b.Paused(now)) {
		return true, nil
	}
	waits := make([]time.Duration, len(costs))
	b.forecastInto(now, b.Tokens, costs, valid, waits)
	return false, waits
}

// Take grants requests in order while tokens last. It stops at the first
// request that does not fit, so a large request is never starved by smaller
// ones behind it; the rest get a RetryAfter. A request whose cost fails
// [CheckCost] is skipped: neither granted nor counted, with a zero RetryAfter.
//
// A paused bucket grants nothing. A bucket in shadow mode grants every valid
// request, and counts in WouldDeny the tokens of those it would have refused.
func (b *Bucket) Take(now time.Time, costs []int64) []Result {
	results := make([]Result, len(costs))
	valid := b.validIndexes(costs)
	n := 0
	var spent int64
	for ; n < len(valid) && costs[valid[n]] <= b.Tokens && !b.Paused(now); n++ {
		c := costs[valid[n]]
		b.Tokens -= c
		spent += c
		results[valid[n]] = Result{Granted: true, Remaining: b.Tokens}
	}
	b.Granted = addSat(b.Granted, spent)
	b.noteLateSpend(now, spent)
	waits := make([]time.Duration, len(costs))
	b.forecastInto(now, b.Tokens, costs, valid[n:], waits)
	for _, i := range valid[n:] {
		if b.spec.Shadow() {
			b.WouldDeny = addSat(b.WouldDeny, costs[i])
			results[i] = Result{Granted: true, Shadow: true}
			continue
		}
		b.Denied = addSat(b.Denied, costs[i])
		results[i].RetryAfter = waits[i]
	}
	for i := range results {
		if !results[i].Granted || results[i].Shadow {
			results[i].Remaining = b.Tokens
		}
	}
	return results
}

// MaxPause bounds a pause: an upstream that asks for longer is given this.
const MaxPause = 24 * time.Hour

// Paused reports whether a pause the upstream asked for lasts at now.
func (b *Bucket) Paused(now time.Time) bool { return now.Before(b.PausedUntil) }

// Pause makes the bucket grant nothing until until (at most MaxPause after
// now), as its upstream asked: a 429 with a Retry-After. A pause ending no
// later than one already running changes nothing, so the same answer seen by
// many callers pauses the bucket once. It reports whether a pause began.
func (b *Bucket) Pause(now, until time.Time) bool {
	if limit := now.Add(MaxPause); until.After(limit) {
		until = limit
	}
	if !until.After(now) || !until.After(b.PausedUntil) {
		return false
	}
	began := !b.Paused(now)
	b.PausedUntil = until
	if began {
		b.Pauses = addSat(b.Pauses, 1)
	}
	return began
}

// Calibrate lowers the tokens to at most remaining, what the upstream says
// is left of its quota; it never raises them. It reports whether it lowered them.
func (b *Bucket) Calibrate(remaining int64) bool {
	if remaining < 0 || remaining >= b.Tokens {
		return false
	}
	b.Tokens = remaining
	b.Calibrations = addSat(b.Calibrations, 1)
	return true
}

// A Lease is tokens lent to one process, which hands them out itself until
// the next tick.
type Lease struct {
	ID     string `json:"id"`
	Tokens int64  `json:"tokens"`
}

// Lend grants cost tokens under lease id for a process to hand out until
// NextTick, if the bucket is rich: it still holds at least as many once they
// are lent, and no scheduled refill is due (tokens lent now must belong to
// the current window). It reports whether it lent them.
func (b *Bucket) Lend(now time.Time, id string, cost int64) bool {
	if id == "" || CheckCost(cost, b.spec.Maximum) != nil || b.Tokens < 2*cost || b.refillDue(now) {
		return false
	}
	b.Tokens -= cost
	b.Granted = addSat(b.Granted, cost)
	if len(b.Leases) >= MaxLeases {
		b.Leases = slices.Delete(b.Leases, 0, len(b.Leases)-MaxLeases+1)
	}
	b.Leases = append(b.Leases, Lease{ID: id, Tokens: cost})
	return true
}

// Refund gives back tokens of a grant that will not be used, and returns how
// many it took back: never more than fits under the maximum. The caller
// checks that the grant was made in the window that is still running (a
// refill since then has already restored the bucket) and is refunded once.
func (b *Bucket) Refund(tokens int64) int64 {
	back := clamp(tokens, 0, b.spec.Maximum-b.Tokens)
	b.Tokens += back
	b.Refunded = addSat(b.Refunded, back)
	return back
}

// Charge takes tokens that a call used beyond what it was granted: what the
// bucket holds now, and the rest as a debt that the next refills pay first,
// so a quota of tokens per window holds over time even when one call
// overshoots. The debt is capped at the maximum. It returns the debt added.
func (b *Bucket) Charge(tokens int64) int64 {
	tokens = clamp(tokens, 0, MaxTokens)
	take := min(tokens, b.Tokens)
	b.Tokens -= take
	b.Charged = addSat(b.Charged, tokens)
	debt := min(tokens-take, b.spec.Maximum-b.Debt)
	b.Debt += debt
	return debt
}

// CountDenied adds tokens refused elsewhere (by an update validator, which
// cannot change the state) to Denied. Negative counts are ignored.
func (b *Bucket) CountDenied(tokens int64) {
	b.Denied = addSat(b.Denied, max(tokens, 0))
}

// Return gives back unused tokens of lease id, once: only while the window
// they were lent in lasts (no refill since, none due), and never more than
// the lease lent or than fits under the maximum. It returns how many it took back.
func (b *Bucket) Return(now time.Time, id string, tokens int64) int64 {
	i := slices.IndexFunc(b.Leases, func(l Lease) bool { return l.ID == id })
	if i < 0 {
		return 0
	}
	lease := b.Leases[i]
	b.Leases = slices.Delete(b.Leases, i, i+1)
	if tokens <= 0 || b.refillDue(now) {
		return 0
	}
	back := min(tokens, lease.Tokens, b.spec.Maximum-b.Tokens)
	b.Tokens += back
	b.Granted -= back
	return back
}

// NextTick returns the nominal time of the next scheduled refill, or zero
// before the bucket knows where its schedule stands.
func (b *Bucket) NextTick() time.Time {
	if base := b.tickBase(); !base.IsZero() {
		return b.sched.Next(base)
	}
	return time.Time{}
}

// refillDue reports whether a scheduled refill's tick has passed and the
// refill has not arrived.
func (b *Bucket) refillDue(now time.Time) bool {
	due := b.NextTick()
	return due.IsZero() || !now.Before(due)
}

func (b *Bucket) validIndexes(costs []int64) []int {
	valid := make([]int, 0, len(costs))
	for i, c := range costs {
		if CheckCost(c, b.spec.Maximum) == nil {
			valid = append(valid, i)
		}
	}
	return valid
}

// A Spend records tokens granted at one instant after a scheduled refill fell
// due, before that refill arrived.
type Spend struct {
	At     time.Time `json:"at"`
	Tokens int64     `json:"tokens"`
}

// maxSpends bounds State.Late; beyond it the oldest entries are merged into
// the next one, which counts them as later than they were: never more tokens.
const maxSpends = 256

// noteLateSpend records tokens granted at now if a scheduled refill is due.
func (b *Bucket) noteLateSpend(now time.Time, tokens int64) {
	if tokens == 0 || !b.tickBase().IsZero() && !b.refillDue(now) {
		return
	}
	b.Late = append(b.Late, Spend{At: now, Tokens: tokens})
	if len(b.Late) > maxSpends {
		b.Late[1].Tokens += b.Late[0].Tokens
		b.Late = b.Late[1:]
	}
}

// lateSpend sums the tokens granted at or after a scheduled tick.
func (b *Bucket) lateSpend(tick time.Time) int64 {
	if tick.IsZero() {
		return 0
	}
	var n int64
	for _, s := range b.Late {
		if !s.At.Before(tick) {
			n += s.Tokens
		}
	}
	return n
}

// trimLateSpend forgets spends before the refill now due.
func (b *Bucket) trimLateSpend() {
	due := b.sched.Next(b.LastTick)
	keep := b.Late[:0]
	for _, s := range b.Late {
		if !due.IsZero() && !s.At.Before(due) {
			keep = append(keep, s)
		}
	}
	b.Late = keep
}

// tickBase is the instant the next scheduled refill follows: the last tick
// applied, else the bucket's creation.
func (b *Bucket) tickBase() time.Time {
	if !b.LastTick.IsZero() {
		return b.LastTick
	}
	return b.Created
}

// NextRefill returns when the next refill is expected to arrive: the nominal
// tick time plus the measured lag, or shortly when a due tick is late.
func (b *Bucket) NextRefill(now time.Time) time.Time {
	_, arrival := b.nextArrival(now)
	return arrival
}

// nextArrival returns the nominal time of the next refill and when it is
// expected to be applied.
func (b *Bucket) nextArrival(now time.Time) (nominal, arrival time.Time) {
	if base := b.tickBase(); !base.IsZero() {
		nominal = b.sched.Next(base)
		if nominal.IsZero() {
			return nominal, nominal
		}
		due := b.arrival(b.LastTick, nominal)
		switch late := now.Sub(due); {
		case late < 0:
			return nominal, due
		case late < LateRefillGrace:
			return nominal, now.Add(LateRefillRetry)
		}
		// Missed (schedule paused, outage): expect the next one from now.
	}
	nominal = b.sched.Next(now)
	if nominal.IsZero() {
		return nominal, nominal
	}
	return nominal, b.arrival(time.Time{}, nominal)
}

// arrival returns when the refill of tick is expected to be applied, prev
// being the tick before it (zero if unknown). An authorized tick applies on
// the tick itself. Once refills authorize the ticks after them, so does every
// later tick: its earliest authorizer, the refill of prev or of the first
// tick within AuthorizeLead before it, lies at least MaxRefillLag before it
// (see TestAuthorizersComeInTime), so that refill is expected in time.
// Otherwise a tick waits for its own refill, expectedLag after it.
func (b *Bucket) arrival(prev, tick time.Time) time.Time {
	if !b.Until.IsZero() && (!tick.After(b.Until) || !prev.IsZero() && tick.Sub(prev) <= MaxLead) {
		return tick
	}
	return tick.Add(b.expectedLag())
}

// expectedLag is how long after its tick a refill is expected: the smoothed
// lag plus twice its smoothed deviation, so that callers told to come back
// then rarely arrive before it.
func (b *Bucket) expectedLag() time.Duration {
	return min(b.RefillLag+2*b.RefillJitter, MaxRefillLag)
}

// forecastInto simulates refills from tokens, granting the requests costs[i]
// for i in queue in order as soon as each fits, and stores in waits[i] how
// long each waits.
func (b *Bucket) forecastInto(now time.Time, tokens int64, costs []int64, queue []int, waits []time.Duration) {
	// A pause holds back even the tokens on hand until it ends.
	notBefore := now
	if b.Paused(now) {
		notBefore = b.PausedUntil
		for ; len(queue) > 0 && costs[queue[0]] <= tokens; queue = queue[1:] {
			tokens -= costs[queue[0]]
			waits[queue[0]] = notBefore.Sub(now)
		}
	}
	nominal, arrival := b.nextArrival(now)
	debt := b.Debt
	for ticks := 0; len(queue) > 0 && ticks < maxForecastTicks && !nominal.IsZero(); ticks++ {
		tokens = min(b.spec.Maximum, tokens+b.spec.Amount)
		pay := min(debt, tokens)
		tokens -= pay
		debt -= pay
		for ; len(queue) > 0 && costs[queue[0]] <= tokens; queue = queue[1:] {
			tokens -= costs[queue[0]]
			waits[queue[0]] = max(arrival.Sub(now), notBefore.Sub(now), 0)
		}
		prev := nominal
		nominal = b.sched.Next(nominal)
		arrival = b.arrival(prev, nominal)
	}
	last := NeverRetryAfter
	if !nominal.IsZero() {
		last = max(arrival.Sub(now), notBefore.Sub(now), 0)
	}
	for _, i := range queue {
		waits[i] = last
	}
}

// addSat adds b ≥ 0 to a ≥ 0, saturating at math.MaxInt64.
func addSat(a, b int64) int64 {
	if b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

func clamp[T int64 | time.Duration](v, lo, hi T) T {
	return max(lo, min(hi, v))
}

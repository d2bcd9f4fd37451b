package bucket

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC) // a whole minute, so also a tick of "@every 1s"

func at(d time.Duration) time.Time { return t0.Add(d) }

func mustNew(t *testing.T, spec Spec) *Bucket {
	t.Helper()
	b, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ptr(v int64) *int64 { return &v }

// perSecond is "5 per second, bursts of 5".
var perSecond = Spec{Name: "s", Schedule: "@every 1s", Amount: 5, Maximum: 5}

func TestTakeAndRefillSteps(t *testing.T) {
	b := mustNew(t, perSecond)
	type step struct {
		at     time.Duration
		refill bool // a scheduled refill whose nominal time is the whole second at or before at
		take   []int64
		want   []Result
		tokens int64
	}
	s := time.Second
	steps := []step{
		{at: 100 * time.Millisecond, take: []int64{2, 2}, tokens: 1,
			want: []Result{{Granted: true, Remaining: 3}, {Granted: true, Remaining: 1}}},
		// Partial batch: the first fits, the second waits for the tick at 1s.
		{at: 200 * time.Millisecond, take: []int64{1, 3, 1}, tokens: 0,
			want: []Result{{Granted: true, Remaining: 0}, {Remaining: 0, RetryAfter: 800 * time.Millisecond}, {Remaining: 0, RetryAfter: 800 * time.Millisecond}}},
		// Refill arrives 50ms after its nominal time: the lag is measured.
		{at: s + 50*time.Millisecond, refill: true, tokens: 5},
		// Head of line: 6 can never fit in this bucket (invalid, skipped); 4 is granted,
		// then 3 does not fit and blocks the 1 behind it; both expect the 2s tick + lag.
		{at: s + 60*time.Millisecond, take: []int64{6, 4, 3, 1}, tokens: 1,
			want: []Result{{Remaining: 1}, {Granted: true, Remaining: 1}, {Remaining: 1, RetryAfter: 990 * time.Millisecond}, {Remaining: 1, RetryAfter: 990 * time.Millisecond}}},
		// A refill never exceeds the maximum.
		{at: 2*s + 50*time.Millisecond, refill: true, tokens: 5},
		{at: 3*s + 50*time.Millisecond, refill: true, tokens: 5},
	}
	for i, st := range steps {
		now := at(st.at)
		if st.refill {
			b.Refill(now, now.Truncate(time.Second), perSecond.Amount)
		}
		if st.take != nil {
			got := b.Take(now, st.take)
			if !reflect.DeepEqual(got, st.want) {
				t.Errorf("step %d: Take(%v) = %+v, want %+v", i, st.take, got, st.want)
			}
		}
		if b.Tokens != st.tokens {
			t.Errorf("step %d: tokens = %d, want %d", i, b.Tokens, st.tokens)
		}
	}
	if b.Granted != 2+2+1+4 || b.Denied != 3+1+3+1 {
		t.Errorf("granted %d, denied %d; want 9 and 8", b.Granted, b.Denied)
	}
	if b.RefillLag != 50*time.Millisecond {
		t.Errorf("RefillLag = %v, want 50ms", b.RefillLag)
	}
}

func TestRefillReturnsAdded(t *testing.T) {
	b := mustNew(t, Spec{Name: "r", Schedule: "@hourly", Amount: 4, Maximum: 10, Initial: ptr(7)})
	if got := b.Refill(t0, time.Time{}, 4); got != 3 || b.Tokens != 10 {
		t.Errorf("Refill = %d, tokens %d; want 3 and 10", got, b.Tokens)
	}
	if !b.LastTick.IsZero() || b.LastRefill != t0 {
		t.Errorf("a manual refill set LastTick %v / LastRefill %v", b.LastTick, b.LastRefill)
	}
	if got := b.Refill(t0, time.Time{}, -5); got != 0 || b.Tokens != 10 {
		t.Errorf("negative refill: added %d, tokens %d; want 0 and 10", got, b.Tokens)
	}
}

func TestRetryAfterCountsRequestsAhead(t *testing.T) {
	// 2 tokens now, 5 a tick, at most 5: costs 3,3,3,3 need ticks 1,2,3,3.
	b := mustNew(t, Spec{Name: "q", Schedule: "@every 10s", Amount: 5, Maximum: 5, Initial: ptr(2)})
	ok, waits := b.Check(at(time.Second), []int64{3, 3, 3, 3})
	want := []time.Duration{9 * time.Second, 19 * time.Second, 29 * time.Second, 39 * time.Second}
	// tick 1: 5 → 3 granted, 2 left; tick 2: 5 (capped) → 3 granted, 2 left; and so on.
	if ok || !reflect.DeepEqual(waits, want) {
		t.Errorf("Check = %v, %v; want false, %v", ok, waits, want)
	}
	if b.Tokens != 2 || b.Denied != 0 {
		t.Errorf("Check changed the bucket: tokens %d, denied %d", b.Tokens, b.Denied)
	}
}

func TestRetryAfterUsesCapacity(t *testing.T) {
	// Maximum 10, amount 10, 5 tokens: each tick refills to 10, so 8 and 8 take two ticks.
	b := mustNew(t, Spec{Name: "c", Schedule: "@every 1s", Amount: 10, Maximum: 10, Initial: ptr(5)})
	ok, waits := b.Check(t0, []int64{8, 8, 10})
	want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}
	if ok || !reflect.DeepEqual(waits, want) {
		t.Errorf("Check = %v, %v; want false, %v", ok, waits, want)
	}
}

func TestCheckGrantable(t *testing.T) {
	b := mustNew(t, perSecond)
	if ok, waits := b.Check(t0, []int64{0, 5}); !ok || waits != nil {
		t.Errorf("Check skipping an invalid cost = %v, %v; want true, nil", ok, waits)
	}
	if ok, _ := b.Check(t0, []int64{0, -1}); ok {
		t.Error("Check of invalid costs only = true")
	}
}

func TestNextRefill(t *testing.T) {
	b := mustNew(t, Spec{Name: "n", Schedule: "@every 10s", Amount: 1, Maximum: 1})
	if got, want := b.NextRefill(at(3*time.Second)), at(10*time.Second); got != want {
		t.Errorf("before any tick: NextRefill = %v, want %v", got, want)
	}
	b.Refill(at(10*time.Second+200*time.Millisecond), at(10*time.Second), 1)
	tests := []struct {
		now, want time.Duration
	}{
		{12 * time.Second, 20*time.Second + 200*time.Millisecond},                      // nominal + lag
		{20*time.Second + 500*time.Millisecond, 20*time.Second + 600*time.Millisecond}, // due and late: soon
		{25 * time.Second, 30*time.Second + 200*time.Millisecond},                      // missed: the next one
	}
	for _, tt := range tests {
		if got, want := b.NextRefill(at(tt.now)), at(tt.want); got != want {
			t.Errorf("NextRefill(t0+%v) = %v, want %v", tt.now, got.Sub(t0), want.Sub(t0))
		}
	}
}

func TestRefillLagIsCappedAndSmoothed(t *testing.T) {
	b := mustNew(t, perSecond)
	b.Refill(at(time.Hour), t0, 1) // a catch-up tick an hour late
	if b.RefillLag != MaxRefillLag {
		t.Errorf("lag = %v, want the cap %v", b.RefillLag, MaxRefillLag)
	}
	b.Refill(at(time.Hour+time.Second), at(time.Hour+time.Second), 1)
	if b.RefillLag != MaxRefillLag/2 {
		t.Errorf("lag = %v, want %v", b.RefillLag, MaxRefillLag/2)
	}
	// An older tick (delivered out of order) does not move LastTick back.
	b.Refill(at(2*time.Hour), at(time.Minute), 1)
	if b.LastTick != at(time.Hour+time.Second) {
		t.Errorf("LastTick = %v, want t0+1h1s", b.LastTick.Sub(t0))
	}
}

func TestReconfigure(t *testing.T) {
	b := mustNew(t, Spec{Name: "x", Schedule: "@hourly", Amount: 10, Maximum: 10})
	b.Take(t0, []int64{2})
	if err := b.Reconfigure(Spec{Name: "x", Schedule: "@every 1s", Amount: 3, Maximum: 20}); err != nil {
		t.Fatal(err)
	}
	if b.Tokens != 8 || b.Granted != 2 || b.Spec().Maximum != 20 || b.Schedule().Every() != time.Second {
		t.Errorf("after raising maximum: tokens %d granted %d spec %+v", b.Tokens, b.Granted, b.Spec())
	}
	if err := b.Reconfigure(Spec{Name: "x", Schedule: "@every 1s", Amount: 3, Maximum: 5}); err != nil {
		t.Fatal(err)
	}
	if b.Tokens != 5 {
		t.Errorf("after lowering maximum to 5: tokens %d, want 5", b.Tokens)
	}
	if err := b.Reconfigure(Spec{Name: "y", Schedule: "@hourly", Amount: 1, Maximum: 1}); err == nil || !strings.Contains(err.Error(), "renamed") {
		t.Errorf("rename: err = %v", err)
	}
	if err := b.Reconfigure(Spec{Name: "x", Schedule: "@hourly", Amount: 0, Maximum: 1}); err == nil || !strings.Contains(err.Error(), "amount") {
		t.Errorf("invalid spec: err = %v", err)
	}
	if err := b.Reconfigure(Spec{Name: "x", Schedule: "@every 1s", Amount: 3, Maximum: 5, Keyed: true}); err == nil || !strings.Contains(err.Error(), "unkeyed to keyed with 8 shards") {
		t.Errorf("unkeyed to keyed: err = %v", err)
	}
	if b.Tokens != 5 || b.Spec().Maximum != 5 {
		t.Errorf("a refused reconfigure changed the bucket: tokens %d spec %+v", b.Tokens, b.Spec())
	}
	k := mustNew(t, Spec{Name: "k", Schedule: "@hourly", Amount: 10, Maximum: 10, Keyed: true})
	if err := k.Reconfigure(Spec{Name: "k", Schedule: "@hourly", Amount: 10, Maximum: 10, Keyed: true, Shards: 8}); err != nil {
		t.Errorf("8 shards, spelled out: %v", err)
	}
	if err := k.Reconfigure(Spec{Name: "k", Schedule: "@hourly", Amount: 10, Maximum: 10, Keyed: true, Shards: 16}); err == nil || !strings.Contains(err.Error(), "keyed with 8 shards to keyed with 16 shards") {
		t.Errorf("8 shards to 16: err = %v", err)
	}
	// A key holding more than a lowered maximum holds the maximum.
	if err := k.Reconfigure(Spec{Name: "k", Schedule: "@hourly", Amount: 10, Maximum: 4, Keyed: true}); err != nil {
		t.Fatal(err)
	}
	if kb := k.Key(&KeyState{Tokens: 9, Debt: 7}); kb.Tokens != 4 || kb.Debt != 4 {
		t.Errorf("key after lowering maximum to 4: tokens %d debt %d, want 4 and 4", kb.Tokens, kb.Debt)
	}
}

func TestRestoreClamps(t *testing.T) {
	b, err := Restore(perSecond, State{Tokens: 99})
	if err != nil || b.Tokens != 5 {
		t.Errorf("Restore(99 tokens) = %v, %v; want 5 tokens", b, err)
	}
	b, err = Restore(perSecond, State{Tokens: -3})
	if err != nil || b.Tokens != 0 {
		t.Errorf("Restore(-3 tokens) = %v, %v; want 0 tokens", b, err)
	}
	if _, err := Restore(Spec{Name: "bad"}, State{}); err == nil {
		t.Error("Restore of an invalid spec succeeded")
	}
}

// A provider that resets on the tick counts calls made after the tick against
// the new window, even when tb's refill arrives later: tb backdates the refill
// to its tick and charges those late grants to it.
func TestRefillAppliesAsOfItsTick(t *testing.T) {
	tests := []struct {
		name            string
		spec            Spec
		before, late    int64 // granted before the tick, and after it but before the refill
		want, wantNaive int64
	}{
		// "5 per second, reset on the second": 3 were used after the reset, 2 remain in the window.
		{"fixed window", perSecond, 2, 3, 2, 5},
		// "2 per second, up to 10": the provider refilled 10 → 10 at the tick, then 4 were used.
		{"token bucket", Spec{Name: "b", Schedule: "@every 1s", Amount: 2, Maximum: 10}, 0, 4, 6, 8},
		// No late grants: a plain refill.
		{"on time", perSecond, 4, 0, 5, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustNew(t, tt.spec)
			b.Created = at(-300 * time.Millisecond)
			if tt.before > 0 && !b.Take(at(-100*time.Millisecond), []int64{tt.before})[0].Granted {
				t.Fatal("grant before the tick refused")
			}
			if tt.late > 0 && !b.Take(at(20*time.Millisecond), []int64{tt.late})[0].Granted {
				t.Fatal("grant after the tick refused")
			}
			naive := min(tt.spec.Maximum, b.Tokens+tt.spec.Amount)
			b.Refill(at(40*time.Millisecond), t0, tt.spec.Amount)
			if b.Tokens != tt.want || naive != tt.wantNaive {
				t.Errorf("after the refill: %d tokens, want %d (a refill as of its arrival would give %d)", b.Tokens, tt.want, naive)
			}
			if len(b.Late) != 0 {
				t.Errorf("late grants kept after their refill: %+v", b.Late)
			}
		})
	}
}

// With refills later than the interval, each refill is still applied as of its own tick.
func TestRefillsLaterThanTheInterval(t *testing.T) {
	b := mustNew(t, perSecond)
	b.Created = at(-500 * time.Millisecond)
	b.Take(at(100*time.Millisecond), []int64{5}) // after tick 0: window 0
	b.Refill(at(1200*time.Millisecond), t0, 5)   // tick 0 arrives after tick 1 is due
	if b.Tokens != 0 {                           // window 0 had 5 and all were used
		t.Fatalf("after tick 0: %d tokens, want 0", b.Tokens)
	}
	b.Refill(at(1300*time.Millisecond), at(time.Second), 5) // tick 1
	if r := b.Take(at(1400*time.Millisecond), []int64{5}); !r[0].Granted || b.Tokens != 0 {
		t.Errorf("window 1 should hold 5 tokens: %+v, %d left", r, b.Tokens)
	}
}

// Callers are sent back after the smoothed lag plus twice its deviation, so
// most arrive once the refill has.
func TestForecastAllowsForRefillJitter(t *testing.T) {
	b := mustNew(t, Spec{Name: "j", Schedule: "@every 10s", Amount: 1, Maximum: 1})
	b.Refill(at(10*time.Second+100*time.Millisecond), at(10*time.Second), 1)
	b.Refill(at(20*time.Second+300*time.Millisecond), at(20*time.Second), 1)
	if b.RefillLag != 200*time.Millisecond || b.RefillJitter != 100*time.Millisecond {
		t.Fatalf("lag %v, jitter %v; want 200ms and 100ms", b.RefillLag, b.RefillJitter)
	}
	if got, want := b.NextRefill(at(25*time.Second)), at(30*time.Second+400*time.Millisecond); got != want {
		t.Errorf("NextRefill = t0+%v, want t0+%v", got.Sub(t0), want.Sub(t0))
	}
}

func TestLendAndReturn(t *testing.T) {
	b := mustNew(t, Spec{Name: "l", Schedule: "@every 10s", Amount: 100, Maximum: 100})
	b.Created = t0
	if got := b.NextTick(); got != at(10*time.Second) {
		t.Fatalf("NextTick = %v", got.Sub(t0))
	}
	if !b.Lend(at(time.Second), "a", 40) || b.Tokens != 60 || b.Granted != 40 {
		t.Fatalf("lend 40 of 100: tokens %d granted %d", b.Tokens, b.Granted)
	}
	if b.Lend(at(time.Second), "b", 40) {
		t.Error("lent 40 of 60: a lender must keep as many as it lends")
	}
	if b.Lend(at(10*time.Second+time.Millisecond), "c", 10) {
		t.Error("lent while a refill is due")
	}
	// Returned within the window: taken back, once, and never more than lent.
	if got := b.Return(at(9*time.Second), "nope", 15); got != 0 {
		t.Errorf("a return for no lease took %d", got)
	}
	if got := b.Return(at(9*time.Second), "a", 55); got != 40 || b.Tokens != 100 || b.Granted != 0 {
		t.Errorf("return 55 of a lease of 40: took %d, tokens %d, granted %d", got, b.Tokens, b.Granted)
	}
	if got := b.Return(at(9*time.Second), "a", 5); got != 0 {
		t.Errorf("a second return took %d", got)
	}
	// Returned after the tick, or after a refill: the window has ended, nothing comes back.
	b.Lend(at(9*time.Second), "d", 10)
	if got := b.Return(at(10*time.Second), "d", 5); got != 0 {
		t.Errorf("a return after the tick took %d", got)
	}
	b.Lend(at(9*time.Second), "e", 10)
	b.Refill(at(10*time.Second+100*time.Millisecond), at(10*time.Second), 100)
	if got := b.Return(at(11*time.Second), "e", 5); got != 0 {
		t.Errorf("a return of tokens lent before the last refill took %d", got)
	}
}

func TestFutureTicksAreRefusedAndHealed(t *testing.T) {
	b := mustNew(t, Spec{Name: "f", Schedule: "@every 10s", Amount: 5, Maximum: 10, Initial: ptr(0)})
	b.Created = t0
	now := at(time.Second)
	// A tick from a backfill over a future range, or a hand-sent signal.
	for _, tick := range []time.Time{at(time.Hour), time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if got := b.Refill(now, tick, 5); got != 0 || b.Tokens != 0 || !b.LastTick.IsZero() {
			t.Errorf("Refill with tick %v: added %d, tokens %d, LastTick %v; want it refused", tick, got, b.Tokens, b.LastTick)
		}
	}
	if b.Ignored != 2 {
		t.Errorf("Ignored = %d, want 2", b.Ignored)
	}
	if got, want := b.NextRefill(now), at(10*time.Second); !got.Equal(want) {
		t.Errorf("NextRefill = %v, want %v: a refused tick must not move the forecast", got, want)
	}
	// A tick within the allowance is a tick.
	if got := b.Refill(now, at(10*time.Second), 5); got != 5 {
		t.Errorf("a tick %v ahead added %d, want 5", 9*time.Second, got)
	}

	// A state carried from a build that took a future tick heals.
	poisoned := mustNew(t, perSecond)
	poisoned.Created = t0
	poisoned.LastTick = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
	poisoned.Tokens = 0
	if !poisoned.Heal(now) {
		t.Fatal("Heal found nothing to repair")
	}
	_, waits := poisoned.Check(now, []int64{1})
	if waits[0] > time.Second+MaxRefillLag {
		t.Errorf("after Heal a request waits %v, want at most the next tick", waits[0])
	}
	if poisoned.Heal(now) {
		t.Error("Heal repaired a healthy state")
	}
}

func TestLeasesAreBounded(t *testing.T) {
	b := mustNew(t, Spec{Name: "l", Schedule: "@daily", Amount: 1_000_000, Maximum: 1_000_000})
	b.Created = t0
	for i := range 10 * MaxLeases {
		if !b.Lend(at(time.Second), fmt.Sprintf("lease-%d", i), 1) {
			t.Fatalf("lease %d refused", i)
		}
	}
	if len(b.Leases) != MaxLeases {
		t.Fatalf("%d leases kept, want %d", len(b.Leases), MaxLeases)
	}
	// The oldest were dropped: their return is ignored (tokens lost, never doubled);
	// the newest are still returnable.
	if got := b.Return(at(2*time.Second), "lease-0", 1); got != 0 {
		t.Errorf("return of a dropped lease took %d", got)
	}
	if got := b.Return(at(2*time.Second), fmt.Sprintf("lease-%d", 10*MaxLeases-1), 1); got != 1 {
		t.Errorf("return of the newest lease took %d, want 1", got)
	}
}

func TestCountersSaturate(t *testing.T) {
	b := mustNew(t, perSecond)
	b.CountDenied(math.MaxInt64)
	b.CountDenied(math.MaxInt64)
	b.CountDenied(-5)
	if b.Denied != math.MaxInt64 {
		t.Errorf("Denied = %d, want it saturated at MaxInt64", b.Denied)
	}
	b.Granted = math.MaxInt64 - 1
	b.Take(at(time.Millisecond), []int64{5})
	if b.Granted != math.MaxInt64 {
		t.Errorf("Granted = %d, want it saturated at MaxInt64", b.Granted)
	}
}

func TestAuthorizedTicksApplyOnTime(t *testing.T) {
	b := mustNew(t, Spec{Name: "a", Schedule: "@every 1s", Amount: 5, Maximum: 10, Initial: ptr(0)})
	b.Created = t0
	// The refill of the 1s tick arrives 400ms late, and authorizes the ticks
	// through 4s: those within AuthorizeLead.
	b.Refill(at(1400*time.Millisecond), at(time.Second), 5)
	next := *b
	next.AuthorizeNext(at(time.Second))
	if b.Authorize(at(time.Second)); !b.Until.Equal(at(4*time.Second)) || !next.Until.Equal(at(2*time.Second)) {
		t.Fatalf("Until = t0+%v, want t0+4s; by AuthorizeNext t0+%v, want t0+2s", b.Until.Sub(t0), next.Until.Sub(t0))
	}
	// Before 2s the forecast is the tick itself, no lag.
	if got := b.NextRefill(at(1500 * time.Millisecond)); !got.Equal(at(2 * time.Second)) {
		t.Errorf("NextRefill = t0+%v, want the authorized tick t0+2s", got.Sub(t0))
	}
	if got := b.ApplyDue(at(1999 * time.Millisecond)); len(got) != 0 {
		t.Errorf("applied %v before its tick", got)
	}
	// At 2s it applies, once.
	if got := b.ApplyDue(at(2001 * time.Millisecond)); len(got) != 1 || !got[0].Equal(at(2*time.Second)) || b.Tokens != 10 {
		t.Fatalf("ApplyDue at 2.001s = %v, tokens %d; want the 2s tick, 10 tokens", got, b.Tokens)
	}
	b.Take(at(2100*time.Millisecond), []int64{10})
	// Asked again at 4.5s, it applies 3s and 4s, each as of its tick.
	if got := b.ApplyDue(at(4500 * time.Millisecond)); len(got) != 2 || !got[1].Equal(at(4*time.Second)) || b.Tokens != 10 {
		t.Errorf("ApplyDue at 4.5s = %v, tokens %d; want the 3s and 4s ticks, 10 tokens", got, b.Tokens)
	}
	b.Take(at(4500*time.Millisecond), []int64{10})
	// Nothing authorized 5s.
	if got := b.ApplyDue(at(5100 * time.Millisecond)); len(got) != 0 {
		t.Errorf("applied %v without authorization", got)
	}
	// The refill of 2s comes 3s late and authorizes 5s, due already: a copy
	// for a validator applies it without touching the bucket.
	b.Authorize(at(2 * time.Second))
	d := b.Due(at(5100 * time.Millisecond))
	if d == b || d.Tokens != 5 || b.Tokens != 0 || !b.LastTick.Equal(at(4*time.Second)) {
		t.Errorf("Due: copy %d tokens, bucket %d tokens, last tick t0+%v", d.Tokens, b.Tokens, b.LastTick.Sub(t0))
	}
	if b.ApplyDue(at(5100 * time.Millisecond)); b.Due(at(5500*time.Millisecond)) != b {
		t.Error("Due copied a bucket with no tick due")
	}
	// Past the authorized ticks, a tick is forecast when its earliest
	// authorizer is expected: the refill of 3s (lag 1.5s) authorizes 6s
	// before it, the refill of 5s would be too late.
	b.RefillLag, b.RefillJitter = 1500*time.Millisecond, 0
	if got := b.NextRefill(at(5200 * time.Millisecond)); !got.Equal(at(6 * time.Second)) {
		t.Errorf("NextRefill past the authorized ticks = t0+%v, want the tick t0+6s", got.Sub(t0))
	}
	// Ticks 2s apart: the next one alone is within reach.
	e := mustNew(t, Spec{Name: "e", Schedule: "@every 2s", Amount: 5, Maximum: 10})
	if e.Authorize(t0); !e.Until.Equal(at(2 * time.Second)) {
		t.Errorf("@every 2s: Until t0+%v, want the next tick, t0+2s", e.Until.Sub(t0))
	}
	// A schedule further apart than MaxLead is never authorized ahead.
	h := mustNew(t, Spec{Name: "h", Schedule: "@hourly", Amount: 5, Maximum: 10})
	h.Refill(at(time.Second), t0, 5)
	if h.Authorize(t0); !h.Until.IsZero() {
		t.Errorf("an hourly tick authorized the next: Until %v", h.Until)
	}
	// A new schedule forgets the old one's authorization.
	if err := b.Reconfigure(Spec{Name: "a", Schedule: "@every 2s", Amount: 5, Maximum: 10}); err != nil || !b.Until.IsZero() {
		t.Errorf("after a new schedule: Until %v, %v", b.Until, err)
	}
}

// TestAuthorizersComeInTime: at every period a schedule can have (whole
// seconds), the earliest refill that authorizes a tick — the previous tick's,
// or the first within AuthorizeLead before it — lies at least MaxRefillLag
// before it, the most a refill is expected late; so a tick past the
// authorized ones is forecast on the tick (see arrival).
func TestAuthorizersComeInTime(t *testing.T) {
	for p := time.Second; p <= AuthorizeLead+time.Second; p += time.Second {
		b := mustNew(t, Spec{Name: "p", Schedule: "@every " + p.String(), Amount: 1, Maximum: 1})
		tick := b.Schedule().Next(t0.Add(time.Hour))
		earliest := tick.Add(-p) // the previous tick
		for e := b.Schedule().Next(tick.Add(-AuthorizeLead - 1)); e.Before(tick); e = b.Schedule().Next(e) {
			earliest = minTime(earliest, e)
		}
		c := *b
		if c.Authorize(earliest); c.Until.Before(tick) {
			t.Fatalf("@every %v: the refill of t−%v does not authorize t (until t−%v)", p, tick.Sub(earliest), tick.Sub(c.Until))
		}
		if d := tick.Sub(earliest); d < MaxRefillLag {
			t.Errorf("@every %v: the earliest authorizer is %v before the tick, less than MaxRefillLag %v", p, d, MaxRefillLag)
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// TestLateRefillsWithinTheLeadCostNothing: refills arrive between 0 and
// some lateness after their ticks, out of order, and a caller takes the
// bucket's tokens just after each tick. Every tick is granted on the tick as
// long as the lateness stays within AuthorizeLead; past it, windows go empty.
func TestLateRefillsWithinTheLeadCostNothing(t *testing.T) {
	const ticks = 60
	for _, tc := range []struct {
		late   time.Duration
		onTime bool
	}{{300 * time.Millisecond, true}, {1500 * time.Millisecond, true}, {2900 * time.Millisecond, true}, {5 * time.Second, false}} {
		b := mustNew(t, Spec{Name: "a", Schedule: "@every 1s", Amount: 5, Maximum: 5, Initial: ptr(0)})
		b.Created = t0
		// The refill of tick k arrives at k plus a part of the lateness that
		// varies from tick to tick (0, 7/9, 4/9, 1/9, 8/9, ...).
		arrives := map[int64][]time.Time{}
		for k := int64(1); k <= ticks; k++ {
			late := tc.late * time.Duration(k*7%10) / 9
			ms := at(time.Duration(k)*time.Second + late).Sub(t0).Milliseconds()
			arrives[ms/10*10] = append(arrives[ms/10*10], at(time.Duration(k)*time.Second))
		}
		var granted int64
		empty := 0
		for ms := int64(0); ms <= (ticks+6)*1000; ms += 10 {
			now := at(time.Duration(ms) * time.Millisecond)
			for _, tick := range arrives[ms] {
				b.ApplyDue(now)
				if b.LastTick.Before(tick) {
					b.Refill(now, tick, 5)
				}
				b.Authorize(tick)
				b.ApplyDue(now)
			}
			if ms%1000 == 10 && ms > 6000 && ms < ticks*1000 {
				b.ApplyDue(now)
				if b.Take(now, []int64{5})[0].Granted {
					granted += 5
				} else {
					empty++
				}
			}
		}
		if onTime := empty == 0; onTime != tc.onTime {
			t.Errorf("refills up to %v late: %d windows empty (%d tokens granted); want none empty: %t", tc.late, empty, granted, tc.onTime)
		}
	}
}

func TestRefundAndCharge(t *testing.T) {
	spec := Spec{Name: "llm", Schedule: "@every 1m", Amount: 200, Maximum: 200}
	// Estimate 100, actual 40: 60 back.
	b := mustNew(t, spec)
	b.Take(at(time.Second), []int64{100})
	if got := b.Refund(60); got != 60 || b.Tokens != 160 || b.Refunded != 60 {
		t.Errorf("refund of 60: took back %d, tokens %d, refunded %d", got, b.Tokens, b.Refunded)
	}
	if got := b.Refund(1000); got != 40 || b.Tokens != 200 {
		t.Errorf("a refund beyond the maximum took back %d, tokens %d", got, b.Tokens)
	}
	// Estimate 100, actual 250, with 50 left: a debt of 100, paid by the next refill.
	b = mustNew(t, Spec{Name: "llm", Schedule: "@every 1m", Amount: 200, Maximum: 200, Initial: ptr(150)})
	b.Created = t0
	b.Take(at(time.Second), []int64{100})
	if debt := b.Charge(150); debt != 100 || b.Tokens != 0 || b.Debt != 100 || b.Charged != 150 {
		t.Fatalf("charge of 150 with 50 left: debt %d, tokens %d, debt %d, charged %d", debt, b.Tokens, b.Debt, b.Charged)
	}
	// A request of 150 is forecast after the refill that pays the debt and the next.
	_, waits := b.Check(at(2*time.Second), []int64{150})
	if want := 2*time.Minute - 2*time.Second; waits[0] != want {
		t.Errorf("wait with a debt of 100 = %v, want %v", waits[0], want)
	}
	b.Refill(at(time.Minute), at(time.Minute), 200)
	if b.Tokens != 100 || b.Debt != 0 {
		t.Errorf("after a refill of 200: %d tokens, debt %d; want 100 and 0", b.Tokens, b.Debt)
	}
	// The debt is capped at the maximum.
	if debt := b.Charge(10_000); b.Debt != 200 || debt != 200 {
		t.Errorf("a charge of 10000: debt %d (added %d), want capped at 200", b.Debt, debt)
	}
}

func TestPauseCalibrateAndShadow(t *testing.T) {
	b := mustNew(t, Spec{Name: "p", Schedule: "@every 10s", Amount: 5, Maximum: 10})
	b.Created = t0
	now := at(time.Second)
	// The upstream says: come back in 30s. Nothing is granted until then,
	// tokens on hand included, and the forecast says so.
	if !b.Pause(now, at(31*time.Second)) || b.Pause(now, at(20*time.Second)) {
		t.Fatal("a first pause did not begin, or a shorter one did")
	}
	if ok, waits := b.Check(now, []int64{1}); ok || waits[0] != 30*time.Second {
		t.Errorf("Check while paused: %v %v; want refused for 30s", ok, waits)
	}
	if r := b.Take(now, []int64{1}); r[0].Granted || r[0].RetryAfter != 30*time.Second || b.Tokens != 10 {
		t.Errorf("Take while paused: %+v, tokens %d", r, b.Tokens)
	}
	if b.Pause(at(2*time.Second), at(40*time.Second)) || b.Pauses != 1 || !b.PausedUntil.Equal(at(40*time.Second)) {
		t.Errorf("extending a running pause: pauses %d, until t0+%v; want 1 pause, until 40s", b.Pauses, b.PausedUntil.Sub(t0))
	}
	if r := b.Take(at(40*time.Second), []int64{1}); !r[0].Granted {
		t.Errorf("after the pause: %+v", r)
	}
	if b.Pause(now, at(1000*time.Hour)); b.PausedUntil.Sub(now) != MaxPause {
		t.Errorf("a pause of 1000h lasts %v, want MaxPause", b.PausedUntil.Sub(now))
	}
	// The upstream says 2 are left: the bucket holds no more.
	c := mustNew(t, Spec{Name: "c", Schedule: "@every 10s", Amount: 5, Maximum: 10})
	if !c.Calibrate(2) || c.Tokens != 2 || c.Calibrate(5) || c.Tokens != 2 || c.Calibrations != 1 {
		t.Errorf("calibrate: %d tokens, %d calibrations", c.Tokens, c.Calibrations)
	}
	// Shadow: everything runs; the refusals are counted as an enforcing bucket would make them.
	sh := mustNew(t, Spec{Name: "s", Schedule: "@every 10s", Amount: 5, Maximum: 5, Mode: ModeShadow})
	enf := mustNew(t, Spec{Name: "s", Schedule: "@every 10s", Amount: 5, Maximum: 5})
	for i := range 8 {
		rs, re := sh.Take(now, []int64{1}), enf.Take(now, []int64{1})
		if !rs[0].Granted || rs[0].Shadow != !re[0].Granted {
			t.Errorf("request %d: shadow %+v, enforcing %+v", i, rs[0], re[0])
		}
	}
	if ok, _ := sh.Check(now, []int64{3}); !ok {
		t.Error("Check refused in shadow mode")
	}
	if sh.WouldDeny != enf.Denied || sh.Granted != enf.Granted || sh.Tokens != enf.Tokens || sh.Denied != 0 {
		t.Errorf("shadow: would deny %d, granted %d, %d tokens; enforcing: denied %d, granted %d, %d tokens",
			sh.WouldDeny, sh.Granted, sh.Tokens, enf.Denied, enf.Granted, enf.Tokens)
	}
}

func TestKeysCatchUpWithTicks(t *testing.T) {
	spec := Spec{Name: "k", Schedule: "@every 1s", Amount: 2, Maximum: 5, Keyed: true}
	b := mustNew(t, spec)
	b.Created = t0
	// A new key starts at the initial tokens.
	kb := b.Key(nil)
	if r := kb.Take(at(100*time.Millisecond), []int64{4}); !r[0].Granted {
		t.Fatalf("a new key: %+v", r)
	}
	k := b.Keep(kb, nil, true, at(100*time.Millisecond))
	if k.Tokens != 1 || !k.Used.Equal(at(100*time.Millisecond)) || b.Granted != 4 {
		t.Fatalf("kept %+v, bucket granted %d", k, b.Granted)
	}
	if b.Resting(k, at(100*time.Millisecond)) {
		t.Error("a key below its starting level rests")
	}
	// Three ticks later the key has 1 + 2 + 2 (full at 5), without the shard touching it.
	b.Refill(at(time.Second), at(time.Second), 2)
	b.Refill(at(2*time.Second), at(2*time.Second), 2)
	b.Refill(at(3*time.Second), at(3*time.Second), 2)
	if kb := b.Key(&k); kb.Tokens != 5 {
		t.Errorf("after three ticks the key holds %d, want 5 (capped)", kb.Tokens)
	}
	if !b.Resting(k, at(3*time.Second)) {
		t.Error("a full key does not rest")
	}
	// A denied key is told the tick that brings its tokens.
	empty := KeyState{Tokens: 0, Tick: b.Ticks}
	if ok, waits := b.Key(&empty).Check(at(3100*time.Millisecond), []int64{4}); ok || waits[0] != 1900*time.Millisecond {
		t.Errorf("an empty key asking 4: %v %v; want refused until the 5s tick", ok, waits)
	}
	// A refill of an older tick, arriving out of order, adds nothing to the keys.
	b.Refill(at(3500*time.Millisecond), at(2*time.Second), 2)
	if b.Ticks != 3 {
		t.Errorf("after three ticks and a late one the bucket counts %d ticks, want 3", b.Ticks)
	}
}

// catchUp gives what applying the ticks one by one gives, for every small
// case, and answers at once for a key idle a million ticks.
func TestCatchUpIsTicksOneByOne(t *testing.T) {
	for maximum := int64(1); maximum <= 7; maximum++ {
		for amount := int64(1); amount <= 9; amount++ {
			for tokens := int64(0); tokens <= maximum; tokens++ {
				for debt := int64(0); debt <= maximum; debt++ {
					wantT, wantD := tokens, debt
					for n := int64(0); n <= 12; n++ {
						if gotT, gotD := catchUp(tokens, debt, n, amount, maximum); gotT != wantT || gotD != wantD {
							t.Fatalf("catchUp(tokens %d, debt %d, %d ticks, amount %d, maximum %d) = %d, %d; one by one %d, %d",
								tokens, debt, n, amount, maximum, gotT, gotD, wantT, wantD)
						}
						wantT = min(maximum, wantT+amount)
						pay := min(wantD, wantT)
						wantT, wantD = wantT-pay, wantD-pay
					}
				}
			}
		}
	}
	if tk, d := catchUp(0, MaxTokens, 1_000_000, 1, MaxTokens); tk != 0 || d != MaxTokens-1_000_000 {
		t.Errorf("a million ticks of 1 against the largest debt: %d tokens, %d debt", tk, d)
	}
	if tk, d := catchUp(3, 0, 1<<62, MaxTokens, MaxTokens); tk != MaxTokens || d != 0 {
		t.Errorf("2^62 ticks of the largest amount: %d tokens, %d debt", tk, d)
	}
}

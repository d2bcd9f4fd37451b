package workflows

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/bucket"
)

// maxCarried is what the bucket may carry across continue-as-new: well under
// Temporal's 2 MB payload limit, and under the 512 KB at which it warns.
const maxCarried = 512 << 10

// longID returns a distinct ID of the most bytes a request or refill may have.
func longID(prefix string, i int) string {
	id := fmt.Sprintf("%s-%d-", prefix, i)
	return id + strings.Repeat("x", MaxIDLength-len(id))
}

// TestFloodedBucketStaysBounded sends a bucket everything a caller may send,
// past every bound, and checks that what it continues as new with stays small
// and that the next run answers.
func TestFloodedBucketStaysBounded(t *testing.T) {
	h := newHarness(t)
	spec := bucket.Spec{Name: strings.Repeat("n", bucket.MaxNameLength), Schedule: "@daily", Amount: bucket.MaxTokens, Maximum: bucket.MaxTokens}
	const (
		big    = 3                     // batches of MaxBatch requests with the longest IDs
		leases = bucket.MaxLeases + 10 // batches of one request and ten lease requests
	)
	var results []*updateResult
	at := time.Second
	for b := range big {
		h.at(at, func() {
			reqs := make([]AcquireRequest, MaxBatch)
			for i := range reqs {
				reqs[i] = AcquireRequest{ID: longID(fmt.Sprint("r", b), i), Cost: 1}
			}
			h.acquire(fmt.Sprint("big-", b), reqs...)
		})
		at += time.Millisecond
	}
	for i := range tickIDsKept*5/4 + 60 { // past the point where they are trimmed
		// One signal per callback: the test environment stalls on many at once.
		h.at(at, func() { h.refill(Refill{ID: longID("tick", i), Amount: 1}) })
		at += time.Millisecond
	}
	h.at(at, func() {
		h.refill(Refill{ID: strings.Repeat("y", 1000), Amount: 1})                        // too long to remember: ignored
		h.refill(Refill{ID: "future", Tick: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)}) // from the future: ignored
		for i := range 10 {
			h.env.SignalWorkflow(ReturnSignal, Return{ID: strings.Repeat("z", 1000) + fmt.Sprint(i), Tokens: math.MaxInt64})
			h.env.SignalWorkflow(ReportSignal, Report{Rejected: math.MaxInt64})
		}
	})
	at += time.Millisecond
	for b := range leases {
		h.at(at, func() {
			reqs := []AcquireRequest{{ID: longID(fmt.Sprint("l", b), 0), Cost: 1}}
			for i := range 10 {
				reqs = append(reqs, AcquireRequest{ID: longID(fmt.Sprint("l", b), i+1), Cost: 1, Optional: true})
			}
			results = append(results, h.acquire(fmt.Sprint("lease-", b), reqs...))
		})
		at += time.Millisecond
	}
	// Settle-ups and reports of the longest IDs, past their byte bound, ten
	// per callback: the test environment holds about a thousand callbacks.
	for c := range 150 {
		h.at(at, func() {
			for i := c * 10; i < c*10+10; i++ {
				if i%2 == 0 {
					h.env.SignalWorkflow(SettleSignal, Settle{ID: longID("settle", i), Grant: "no-such-grant", Tokens: -1})
				} else {
					h.env.SignalWorkflow(UpstreamSignal, Upstream{ID: longID("report", i)})
				}
			}
		})
		at += time.Millisecond
	}
	// The last update reaches MaxUpdatesPerRun: the run continues as new.
	h.at(at+time.Second, func() { h.acquire("last", req("last", 1)) })
	h.env.ExecuteWorkflow(BucketWorkflowType, BucketInput{Spec: spec, MaxUpdatesPerRun: big + leases + 1})
	next := continuedAsNew(t, h.env)

	for i, r := range results {
		if r.rejected != nil || r.err != nil {
			t.Fatalf("flood batch %d: %v %v", i, r.rejected, r.err)
		}
		lent := 0
		for _, o := range r.resp.Results[1:] {
			if o.Granted {
				lent++
			}
		}
		if lent != 1 {
			t.Errorf("flood batch %d lent %d leases, want 1", i, lent)
		}
	}
	st := next.State
	if len(st.Leases) > bucket.MaxLeases || next.granted.len() > grantedIDsKept || next.granted.size() > grantedIDsBytes || next.ticks.len() > tickIDsKept ||
		next.settled.len() > settledIDsKept || next.settled.size() > settledIDsBytes {
		t.Errorf("carried %d leases, %d request IDs (%d bytes), %d tick IDs, %d settle-up and report IDs (%d bytes): past their bounds",
			len(st.Leases), next.granted.len(), next.granted.size(), next.ticks.len(), next.settled.len(), next.settled.size())
	}
	if next.settled.size() < settledIDsBytes*9/10 {
		t.Errorf("the flood did not reach the settle-ups' bound: %d bytes of IDs", next.settled.size())
	}
	if next.granted.len() < grantedIDsKept/3 || next.ticks.len() < tickIDsKept {
		t.Errorf("the flood did not reach the bounds: %d request IDs, %d tick IDs", next.granted.len(), next.ticks.len())
	}
	if st.Ignored != 2 || st.Denied != math.MaxInt64 || !st.LastTick.IsZero() {
		t.Errorf("ignored %d refills, denied %d, last tick %v; want 2 ignored, Denied saturated, no tick", st.Ignored, st.Denied, st.LastTick)
	}
	p, err := converter.GetDefaultDataConverter().ToPayload(next)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(p.Data); n > maxCarried {
		t.Errorf("the continue-as-new input is %d bytes, more than %d", n, maxCarried)
	} else {
		t.Logf("continue-as-new input after the flood: %d bytes (%d request IDs, %d tick IDs, %d settle-up and report IDs, %d leases)",
			n, next.granted.len(), next.ticks.len(), next.settled.len(), len(st.Leases))
	}

	// The next run answers.
	h2 := newHarness(t)
	var after *updateResult
	h2.at(time.Second, func() { after = h2.acquire("after", req("after", 1)) })
	h2.run(next, 2*time.Second)
	if after.rejected != nil || !after.resp.Results[0].Granted {
		t.Errorf("acquire in the next run: %+v", after)
	}
}

// TestFutureTickDoesNotPoisonForecasts: a refill whose tick lies in the
// future (a backfill over a future range, a hand-sent signal) is ignored, and
// a denied caller is told to come back at the real next refill.
func TestFutureTickDoesNotPoisonForecasts(t *testing.T) {
	h := newHarness(t)
	var denied *updateResult
	var st Status
	h.at(100*time.Millisecond, func() {
		h.acquire("u1", req("a", 5))
		h.refill(Refill{ID: "2200", Tick: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)})
		h.refill(Refill{ID: "next-month", Tick: t0.AddDate(0, 1, 0)})
	})
	h.at(200*time.Millisecond, func() { denied = h.acquire("u2", req("b", 1)); st = h.state() })
	h.run(BucketInput{Spec: spec5()}, time.Second/2)

	resp, ok := rateLimited(denied.rejected)
	if !ok {
		t.Fatalf("acquire on an empty bucket: %+v", denied)
	}
	if got := resp.Results[0].RetryAfter; got > 800*time.Millisecond+bucket.MaxRefillLag {
		t.Errorf("retry after %v; the next tick is 800ms away", got)
	}
	if st.Ignored != 2 || st.Tokens != 0 || !st.LastTick.IsZero() || st.NextRefill.After(t0.Add(time.Second+bucket.MaxRefillLag)) {
		t.Errorf("state = %+v; want both refills ignored, next refill at the next tick", st)
	}
}

// A state carried from a build that accepted a future tick heals when the
// next run starts.
func TestCarriedFutureTickHeals(t *testing.T) {
	h := newHarness(t)
	poisoned := bucket.State{Tokens: 0, LastTick: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), Created: t0.Add(-time.Hour)}
	var denied *updateResult
	h.at(100*time.Millisecond, func() { denied = h.acquire("u", req("a", 1)) })
	h.run(BucketInput{Spec: spec5(), State: &poisoned}, time.Second/2)
	resp, ok := rateLimited(denied.rejected)
	if !ok || resp.Results[0].RetryAfter > time.Second+bucket.MaxRefillLag {
		t.Errorf("denied %+v: want a retry-after up to the next tick", resp)
	}
}

func TestRejectedCountsAreValidated(t *testing.T) {
	h := newHarness(t)
	var negative *updateResult
	h.at(10*time.Millisecond, func() {
		negative = h.update(AcquireUpdate, "neg", AcquireBatch{Requests: []AcquireRequest{req("a", 1)}, Rejected: -5})
	})
	h.at(20*time.Millisecond, func() {
		h.update(AcquireUpdate, "max1", AcquireBatch{Requests: []AcquireRequest{req("b", 1)}, Rejected: math.MaxInt64})
		h.update(AcquireUpdate, "max2", AcquireBatch{Requests: []AcquireRequest{req("c", 1)}, Rejected: math.MaxInt64})
	})
	h.run(BucketInput{Spec: spec5()}, 100*time.Millisecond)
	var appErr *temporal.ApplicationError
	if !errors.As(negative.rejected, &appErr) || appErr.Type() != ErrInvalidRequest {
		t.Errorf("a negative rejected count: %v, want InvalidRequest", negative.rejected)
	}
	if st := h.stateAfter(t); st.Denied != math.MaxInt64 || st.Granted != 2 {
		t.Errorf("denied %d, granted %d; want Denied saturated and 2 granted", st.Denied, st.Granted)
	}
}

func TestLongRequestIDsAreInvalid(t *testing.T) {
	h := newHarness(t)
	var r *updateResult
	h.at(10*time.Millisecond, func() {
		r = h.acquire("u", req(strings.Repeat("a", MaxIDLength+1), 1), req(longID("ok", 0), 1))
	})
	h.run(BucketInput{Spec: spec5()}, 100*time.Millisecond)
	if r.rejected != nil || !strings.Contains(r.resp.Results[0].Invalid, "bytes long") || !r.resp.Results[1].Granted {
		t.Errorf("results = %+v, %v; want the long ID invalid and the other granted", r.resp.Results, r.rejected)
	}
}

// TestRefillsAuthorizeTheTicksAhead: a scheduled refill lets the bucket
// apply the ticks within bucket.AuthorizeLead after its own by itself, on the
// tick, however late their own refills come — more than a period late too;
// such a refill then changes nothing but the authorization it carries; and
// with no more refills (a paused Schedule) the bucket stops after the ticks
// already authorized.
func TestRefillsAuthorizeTheTicksAhead(t *testing.T) {
	h := newHarness(t)
	spec := bucket.Spec{Name: "api", Schedule: "@every 1s", Amount: 5, Maximum: 20, Initial: new(int64(0))}
	sec := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tick := func(s int) Refill { return Refill{ID: tickID(sec(s)), Tick: sec(s)} }
	onTick := map[int]*updateResult{}
	var late, unauthorized *updateResult
	var afterDup, paused Status
	h.at(1400*time.Millisecond, func() { h.refill(tick(1)) }) // 400ms late: authorizes 2s, 3s and 4s
	h.at(1500*time.Millisecond, func() { h.acquire("u1", req("a", 5)) })
	for s := 2; s <= 6; s++ {
		h.at(time.Duration(s)*time.Second+50*time.Millisecond, func() { onTick[s] = h.acquire(fmt.Sprint("tick", s), req(fmt.Sprint("t", s), 5)) })
	}
	h.at(2400*time.Millisecond, func() { h.refill(tick(2)) }) // late too: authorizes 5s
	h.at(2500*time.Millisecond, func() { afterDup = h.state() })
	h.at(2600*time.Millisecond, func() { late = h.acquire("u3", req("c", 1)) })
	h.at(5500*time.Millisecond, func() { h.refill(tick(3)) }) // 2.5s late: authorizes 6s, still before it
	// The refills of 4s and later never come (a paused Schedule).
	h.at(7050*time.Millisecond, func() { unauthorized = h.acquire("u4", req("d", 1)) })
	h.at(9500*time.Millisecond, func() { paused = h.state() })
	h.run(BucketInput{Spec: spec}, 10*time.Second)

	for s := 2; s <= 6; s++ {
		if r := onTick[s]; r.rejected != nil || !r.resp.Results[0].Granted || !r.resp.LastRefill.Equal(sec(s)) {
			t.Errorf("acquire just after the %ds tick: %+v %v; want granted from the tick itself", s, r.resp, r.rejected)
		}
	}
	if afterDup.Tokens != 0 || afterDup.Granted != 10 || !afterDup.Until.Equal(sec(5)) {
		t.Errorf("after the 2s refill came late: %+v; want it applied once (0 tokens), the ticks through 5s authorized", afterDup.State)
	}
	if resp, ok := rateLimited(late.rejected); !ok || resp.Results[0].RetryAfter != 400*time.Millisecond {
		t.Errorf("denied at 2.6s: %+v; want a retry-after of exactly 400ms, to the authorized 3s tick", resp)
	}
	if _, ok := rateLimited(unauthorized.rejected); !ok {
		t.Errorf("acquire at 7.05s, a tick no refill authorized: %+v %v; want it refused", unauthorized.resp, unauthorized.rejected)
	}
	if paused.Tokens != 0 || !paused.LastTick.Equal(sec(6)) || !paused.Until.Equal(sec(6)) || paused.Granted != 30 {
		t.Errorf("with no refill since the 3s one: %d tokens, %d granted, last tick t0+%v, until t0+%v; want the ticks through 6s alone (30 granted, 0 left)",
			paused.Tokens, paused.Granted, paused.LastTick.Sub(t0), paused.Until.Sub(t0))
	}
}

// TestSettleRefundsAndCharges: refunds give back a grant of the current
// window, once, never more than it cost; a refund after a refill, or for a
// grant the bucket never made, is dropped; a charge beyond the tokens left is
// a debt the next refill pays; and a settle-up is applied once, across
// continue-as-new too.
func TestSettleRefundsAndCharges(t *testing.T) {
	h := newHarness(t)
	spec := bucket.Spec{Name: "llm", Schedule: "@every 10s", Amount: 200, Maximum: 200, Initial: new(int64(200))}
	settle := func(id, grant string, tokens int64) {
		h.env.SignalWorkflow(SettleSignal, Settle{ID: id, Grant: grant, Tokens: tokens})
	}
	var states []Status
	observe := func(at time.Duration) { h.at(at, func() { states = append(states, h.state()) }) }
	h.at(1*time.Second, func() { h.acquire("u1", req("a", 100), req("b", 50)) }) // 50 left
	h.at(2*time.Second, func() {
		settle("s-a", "a", -60)   // used 40 of 100: 60 back
		settle("s-a", "a", -60)   // retried: applied once
		settle("s-b", "b", -500)  // more than b cost: at most 50
		settle("s-x", "nope", -5) // never granted: dropped
	})
	observe(2100 * time.Millisecond)                               // 0: 50 + 60 + 50 = 160
	h.at(3*time.Second, func() { h.acquire("u2", req("c", 160)) }) // 0 left
	h.at(4*time.Second, func() { settle("s-c", "c", 150) })        // used 310: a debt of 150
	observe(4100 * time.Millisecond)                               // 1
	h.at(10100*time.Millisecond, func() { h.refill(Refill{ID: tickID(t0.Add(10 * time.Second)), Tick: t0.Add(10 * time.Second)}) })
	h.at(10200*time.Millisecond, func() { settle("s-late", "c", -100) }) // after the refill: dropped
	observe(10300 * time.Millisecond)                                    // 2: 200 − 150 debt = 50
	h.run(BucketInput{Spec: spec}, 11*time.Second)

	want := []struct{ tokens, debt, refunded, charged int64 }{
		{160, 0, 110, 0},
		{0, 150, 110, 150},
		{50, 0, 110, 150},
	}
	for i, w := range want {
		st := states[i]
		if st.Tokens != w.tokens || st.Debt != w.debt || st.Refunded != w.refunded || st.Charged != w.charged {
			t.Errorf("state %d: %d tokens, debt %d, refunded %d, charged %d; want %+v", i, st.Tokens, st.Debt, st.Refunded, st.Charged, w)
		}
	}

	// Across continue-as-new: the same settle-up again is applied once.
	h2 := newHarness(t)
	var before, after Status
	h2.at(time.Second, func() { h2.acquire("u1", req("a", 100)) })
	h2.at(2*time.Second, func() { h2.env.SignalWorkflow(SettleSignal, Settle{ID: "s-a", Grant: "a", Tokens: -30}) })
	h2.at(3*time.Second, func() { h2.acquire("u2", req("b", 1)) }) // the last update of the run
	h2.env.ExecuteWorkflow(BucketWorkflowType, BucketInput{Spec: spec, MaxUpdatesPerRun: 2})
	next := continuedAsNew(t, h2.env)
	h3 := newHarness(t)
	h3.at(100*time.Millisecond, func() { before = h3.state() })
	h3.at(200*time.Millisecond, func() {
		h3.env.SignalWorkflow(SettleSignal, Settle{ID: "s-a", Grant: "a", Tokens: -30})   // again
		h3.env.SignalWorkflow(SettleSignal, Settle{ID: "s-a2", Grant: "a", Tokens: -100}) // the rest of a's 100: 70
	})
	h3.at(300*time.Millisecond, func() { after = h3.state() })
	h3.run(next, time.Second)
	if before.Tokens != 129 || after.Tokens != 199 || after.Refunded != 100 {
		t.Errorf("across continue-as-new: %d tokens before, %d after, refunded %d; want 129, 199 (70 more: what a may still give back) and 100", before.Tokens, after.Tokens, after.Refunded)
	}
}

// keyReq asks key for cost tokens.
func keyReq(id, key string, cost int64) AcquireRequest {
	return AcquireRequest{ID: id, Key: key, Cost: cost}
}

// TestKeyedShard: each key of a keyed bucket has its own tokens; a greedy key
// leaves the others theirs; a key back at its starting level is forgotten
// when the shard continues as new; keys that belong to another shard, or no
// key, are refused.
func TestKeyedShard(t *testing.T) {
	h := newHarness(t)
	spec := bucket.Spec{Name: "tenant", Schedule: "@every 1s", Amount: 2, Maximum: 2, Keyed: true, Shards: 2}
	var mine, other string // keys of shard 0 and of shard 1
	for i := 0; mine == "" || other == ""; i++ {
		k := fmt.Sprint("t", i)
		if bucket.KeyShard(k, 2) == 0 && mine == "" {
			mine = k
		} else if bucket.KeyShard(k, 2) == 1 && other == "" {
			other = k
		}
	}
	var first, refused, second *updateResult
	var mid Status
	var key KeyStatus
	h.at(100*time.Millisecond, func() {
		first = h.acquire("u1", keyReq("a1", mine, 1), keyReq("a2", mine, 1), keyReq("a3", mine, 1), keyReq("b1", "greedy-"+mine, 1),
			keyReq("x", other, 1), keyReq("y", "", 1))
	})
	h.at(150*time.Millisecond, func() { refused = h.acquire("u1b", keyReq("y2", "", 1), keyReq("a5", mine, 1)) })
	h.at(200*time.Millisecond, func() {
		mid = h.state()
		v, err := h.env.QueryWorkflow(KeyQuery, mine)
		if err == nil {
			err = v.Get(&key)
		}
		if err != nil {
			t.Error(err)
		}
	})
	h.at(1100*time.Millisecond, func() {
		h.refill(Refill{ID: tickID(t0.Add(time.Second)), Tick: t0.Add(time.Second)})
		second = h.acquire("u2", keyReq("a4", mine, 2))
	})
	h.at(5*time.Second, func() { h.acquire("u3", keyReq("z", mine, 1)) }) // the last update of the run
	h.env.ExecuteWorkflow(BucketWorkflowType, BucketInput{Spec: spec, Shard: 0, MaxUpdatesPerRun: 3})
	next := continuedAsNew(t, h.env)

	got := granted(first.resp.Results)
	if !reflect.DeepEqual(got[:3], []bool{true, true, false}) || first.resp.Results[2].RetryAfter != 900*time.Millisecond {
		t.Errorf("key %s asking 3 of 2: %+v", mine, first.resp.Results[:3])
	}
	if bucket.KeyShard("greedy-"+mine, 2) == 0 && !got[3] {
		t.Errorf("another key of the shard was refused: %+v", first.resp.Results[3])
	}
	if first.resp.Results[4].Invalid == "" || first.resp.Results[5].Invalid == "" {
		t.Errorf("a key of another shard, and no key: %+v, %+v; want both invalid", first.resp.Results[4], first.resp.Results[5])
	}
	// A refusal's message tells of the key's tokens (0), not the shard's.
	if want := fmt.Sprintf(`bucket "tenant", key %q: 0 tokens left, next refill expected in 850ms`, mine); refused.rejected == nil || !strings.Contains(refused.rejected.Error(), want) {
		t.Errorf("a key's refusal: %v; want %q", refused.rejected, want)
	}
	if kt := first.resp.Results[1].KeyTokens; kt == nil || *kt != 0 {
		t.Errorf("KeyTokens after the second grant: %v, want 0", kt)
	}
	if mid.Keys < 1 || len(mid.Emptiest) == 0 || mid.Emptiest[0].Key != mine || mid.Emptiest[0].Tokens != 0 || !key.Held || key.Tokens != 0 {
		t.Errorf("state %d keys, emptiest %+v; key query %+v", mid.Keys, mid.Emptiest, key)
	}
	if !second.resp.Results[0].Granted {
		t.Errorf("after the refill the key's 2 tokens: %+v", second.resp.Results)
	}
	// At 5s the key took one more (1 left): it is kept; full keys are forgotten.
	if k, ok := next.keys[mine]; !ok || k.Tokens != 1 {
		t.Errorf("carried keys %+v; want %s with 1 token", next.keys, mine)
	}
	if _, ok := next.keys["greedy-"+mine]; ok {
		t.Errorf("a key back at its starting level was carried: %+v", next.keys)
	}
}

// maxCarriedKeyed is what a shard of a keyed bucket may carry across
// continue-as-new: its keys beside what any bucket carries, still well under
// Temporal's 2 MB payload limit.
const maxCarriedKeyed = 1 << 20

// TestKeyFloodStaysBounded: a shard is sent batches of 1000 requests, each
// of a new key of the longest kind and the longest ID. It holds at most
// MaxKeysPerShard keys: a key past them is told to come back at the next
// refill, when keys back at their starting level make room; what it
// continues as new with, every key held, stays bounded; and the next run
// refuses new keys until the refill, then answers them.
func TestKeyFloodStaysBounded(t *testing.T) {
	h := newHarness(t)
	spec := bucket.Spec{Name: "tenant", Schedule: "@every 10s", Amount: 1, Maximum: 1, Keyed: true, Shards: 1}
	longKey := func(i int) string {
		k := fmt.Sprint("k", i, "-")
		return k + strings.Repeat("x", bucket.MaxKeyLength-len(k))
	}
	// Refills of past ticks, with the longest IDs, fill the tick IDs it
	// carries; they add nothing to the keys.
	h.at(time.Microsecond, func() {
		for i := range 600 {
			h.refill(Refill{ID: longID("tick", i), Tick: t0.Add(-time.Duration(i+1) * time.Second)})
		}
	})
	var results []*updateResult
	batches := MaxKeysPerShard/1000 + 1
	for b := range batches {
		h.at(time.Duration(b+1)*time.Second, func() {
			reqs := make([]AcquireRequest, 1000)
			for i := range reqs {
				reqs[i] = keyReq(longID(fmt.Sprint("r", b), i), longKey(b*1000+i), 1)
			}
			results = append(results, h.acquire(fmt.Sprint("flood-", b), reqs...))
		})
	}
	// Settle-ups and reports of a key it holds, with the longest IDs.
	for c := range 150 {
		h.at(1500*time.Millisecond+time.Duration(c)*time.Millisecond, func() {
			for i := c * 10; i < c*10+10; i++ {
				if i%2 == 0 {
					h.env.SignalWorkflow(SettleSignal, Settle{ID: longID("settle", i), Grant: "no-such-grant", Tokens: -1, Key: longKey(0)})
				} else {
					h.env.SignalWorkflow(UpstreamSignal, Upstream{ID: longID("report", i), Key: longKey(0)})
				}
			}
		})
	}
	h.env.ExecuteWorkflow(BucketWorkflowType, BucketInput{Spec: spec, MaxUpdatesPerRun: batches})
	next := continuedAsNew(t, h.env)

	granted, full := 0, 0
	for _, r := range results {
		if r.rejected != nil || r.err != nil {
			t.Fatalf("flood: %v %v", r.rejected, r.err)
		}
		for _, o := range r.resp.Results {
			switch {
			case o.Granted:
				granted++
			case o.RetryAfter > 0 && o.RetryAfter <= 10*time.Second:
				full++
			default:
				t.Fatalf("a key past the shard's bound: %+v", o)
			}
		}
	}
	if granted != MaxKeysPerShard || full != 1000*batches-MaxKeysPerShard {
		t.Errorf("%d keys granted and %d told to come back at the next refill; want %d and %d", granted, full, MaxKeysPerShard, 1000*batches-MaxKeysPerShard)
	}
	if len(next.keys) != MaxKeysPerShard {
		t.Errorf("carried %d keys, want the %d the shard holds", len(next.keys), MaxKeysPerShard)
	}
	p, err := converter.GetDefaultDataConverter().ToPayload(next)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(p.Data); n > maxCarriedKeyed {
		t.Errorf("the continue-as-new input is %d bytes, more than %d", n, maxCarriedKeyed)
	} else {
		t.Logf("continue-as-new input after the key flood: %d bytes (%d keys, %d request IDs, %d tick IDs, %d settle-up and report IDs)",
			n, len(next.keys), next.granted.len(), len(next.ticks.IDs), next.settled.len())
	}

	// Every key held is empty: a new key waits for the refill, which brings
	// them back to their starting level; then new keys take their places.
	h2 := newHarness(t)
	var early, late *updateResult
	h2.at(time.Second, func() { early = h2.acquire("early", keyReq("early", "a-new-key", 1)) })
	h2.at(10*time.Second+time.Millisecond, func() {
		h2.refill(Refill{ID: tickID(t0.Add(10 * time.Second)), Tick: t0.Add(10 * time.Second)})
		late = h2.acquire("late", keyReq("late", "a-new-key", 1))
	})
	h2.run(next, 11*time.Second)
	if early == nil || early.rejected == nil {
		t.Errorf("a new key in a full shard before the refill: %+v, want refused", early)
	}
	if late == nil || late.rejected != nil || !late.resp.Results[0].Granted {
		t.Errorf("a new key after the refill: %+v", late)
	}
}

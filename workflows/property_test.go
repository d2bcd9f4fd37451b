package workflows

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tokenbucket/tb/bucket"
)

// A step is one operation of a random sequence, at an offset from t0.
type step struct {
	at        time.Duration
	acquire   []AcquireRequest
	refill    *Refill
	configure *bucket.Spec
	ret       *Return
	settle    *Settle
}

func (s step) String() string {
	switch {
	case s.acquire != nil:
		return fmt.Sprintf("t+%v acquire %+v", s.at, s.acquire)
	case s.refill != nil:
		return fmt.Sprintf("t+%v refill %+v", s.at, *s.refill)
	case s.ret != nil:
		return fmt.Sprintf("t+%v return %+v", s.at, *s.ret)
	case s.settle != nil:
		return fmt.Sprintf("t+%v settle %+v", s.at, *s.settle)
	default:
		return fmt.Sprintf("t+%v configure %+v", s.at, *s.configure)
	}
}

// randomSteps makes a sequence of acquires (valid and invalid costs, fresh
// and repeated request IDs, sometimes a lease), returns of leases (some
// twice, some late), settle-ups (refunds and charges, of granted requests
// and of unknown ones, some repeated, some after a refill), refills
// (scheduled ticks, some delivered twice, and manual amounts) and
// reconfigurations (raising and lowering the maximum).
func randomSteps(rng *rand.Rand, n int) []step {
	var steps []step
	at := time.Duration(0)
	var ids, ticks, leases, settles []string
	maximum := int64(10)
	for i := range n {
		at += time.Duration(1+rng.IntN(400)) * time.Millisecond // strictly later: each step is observed alone
		switch r := rng.IntN(10); {
		case r < 6:
			var reqs []AcquireRequest
			for range 1 + rng.IntN(4) {
				id := fmt.Sprintf("r%d-%d", i, len(reqs))
				if len(ids) > 0 && rng.IntN(5) == 0 {
					id = ids[rng.IntN(len(ids))] // a retry of an earlier request
				}
				ids = append(ids, id)
				reqs = append(reqs, AcquireRequest{ID: id, Cost: rng.Int64N(maximum+3) - 1})
			}
			if rng.IntN(3) == 0 {
				id := fmt.Sprintf("lease-%d", i)
				leases = append(leases, id)
				reqs = append(reqs, AcquireRequest{ID: id, Cost: 1 + rng.Int64N(4), Optional: true})
			}
			steps = append(steps, step{at: at, acquire: reqs})
		case r < 7 && len(ids) > 0 && rng.IntN(2) == 0:
			grant := ids[rng.IntN(len(ids))]
			id := fmt.Sprintf("settle-%d", i)
			if len(settles) > 0 && rng.IntN(4) == 0 {
				id = settles[rng.IntN(len(settles))] // a settle-up sent again
			}
			settles = append(settles, id)
			steps = append(steps, step{at: at, settle: &Settle{ID: id, Grant: grant, Tokens: rng.Int64N(13) - 8}})
		case r < 7 && len(leases) > 0:
			id := leases[len(leases)-1] // mostly the latest lease, still returnable
			if rng.IntN(3) == 0 {
				id = leases[rng.IntN(len(leases))]
			}
			steps = append(steps, step{at: at, ret: &Return{ID: id, Tokens: rng.Int64N(6)}})
		case r < 9:
			tick := t0.Add(at).Truncate(time.Second)
			ref := Refill{ID: tick.Format(time.RFC3339Nano), Tick: tick}
			switch rng.IntN(4) {
			case 0: // manual top-up
				ref = Refill{ID: fmt.Sprintf("manual-%d", i), Amount: 1 + rng.Int64N(6)}
			case 1:
				if len(ticks) > 0 { // a tick delivered again
					old := ticks[rng.IntN(len(ticks))]
					tick, _ = time.Parse(time.RFC3339Nano, old)
					ref = Refill{ID: old, Tick: tick}
				}
			}
			if !ref.Tick.IsZero() {
				ticks = append(ticks, ref.ID)
			}
			steps = append(steps, step{at: at, refill: &ref})
		default:
			maximum = 1 + rng.Int64N(20)
			spec := bucket.Spec{Name: "api", Schedule: []string{"@every 1s", "@every 2s"}[rng.IntN(2)], Amount: 1 + rng.Int64N(8), Maximum: maximum}
			steps = append(steps, step{at: at, configure: &spec})
		}
	}
	return steps
}

// model applies a step to the pure arithmetic, with the workflow's rules for
// IDs: a granted request ID is granted again for free, a refill ID applies once.
type model struct {
	b       *bucket.Bucket
	granted map[string]bool
	ticks   map[string]bool
	supply  int64 // initial tokens plus every token a refill added
	// The workflow's ledger: when each request was granted and what a
	// refund may still give back; the settle-ups applied.
	grantedAt  map[string]time.Time
	refundable map[string]int64
	settled    map[string]bool
}

// applyDue applies the ticks the bucket may apply by itself, as the
// workflow does before every step.
func (m *model) applyDue(now time.Time) {
	before := m.b.Tokens
	for _, tick := range m.b.ApplyDue(now) {
		m.ticks[tickID(tick)] = true
	}
	m.supply += m.b.Tokens - before
}

func (m *model) apply(s step) []bool {
	now := t0.Add(s.at)
	m.applyDue(now)
	switch {
	case s.refill != nil:
		if !m.ticks[s.refill.ID] {
			m.ticks[s.refill.ID] = true
			amount := s.refill.Amount
			if amount == 0 {
				amount = m.b.Spec().Amount
			}
			m.supply += m.b.Refill(now, s.refill.Tick, amount)
		}
		if !s.refill.Tick.IsZero() {
			m.b.Authorize(s.refill.Tick)
			m.applyDue(now)
		}
	case s.configure != nil:
		if err := m.b.Reconfigure(*s.configure); err != nil {
			panic(err)
		}
	case s.ret != nil:
		m.b.Return(now, s.ret.ID, s.ret.Tokens)
	case s.settle != nil:
		st := s.settle
		if m.settled[st.ID] {
			return nil
		}
		m.settled[st.ID] = true
		switch {
		case st.Tokens < 0:
			if at, ok := m.grantedAt[st.Grant]; ok {
				n := min(-st.Tokens, m.refundable[st.Grant])
				m.refundable[st.Grant] -= n
				if at.Before(m.b.LastTick) {
					m.b.Unrefunded += n
				} else {
					m.b.Refund(n)
				}
			}
		case st.Tokens > 0:
			m.b.Charge(st.Tokens)
		}
	default:
		costs := make([]int64, len(s.acquire))
		seen := map[string]bool{}
		for i, r := range s.acquire {
			if !m.granted[r.ID] && !seen[r.ID] && !r.Optional {
				costs[i] = r.Cost
			}
			seen[r.ID] = true
		}
		if !slices.ContainsFunc(s.acquire, func(r AcquireRequest) bool { return !r.Optional }) {
			return nil // refused: a batch of only a lease
		}
		// The validator refuses a batch of which nothing can be granted, lease included.
		if !slices.ContainsFunc(s.acquire, func(r AcquireRequest) bool { return m.granted[r.ID] }) {
			if ok, _ := m.b.Check(now, costs); !ok {
				return nil
			}
		}
		results := m.b.Take(now, costs)
		granted := make([]bool, len(costs))
		for i, r := range s.acquire {
			granted[i] = results[i].Granted || m.granted[r.ID] && costs[i] == 0 && !r.Optional && firstIndex(s.acquire, r.ID) == i
			if results[i].Granted {
				m.granted[r.ID] = true
				m.grantedAt[r.ID] = now.Truncate(time.Millisecond)
				m.refundable[r.ID] = costs[i]
			}
		}
		for i, r := range s.acquire {
			if r.Optional && m.b.Lend(now, r.ID, r.Cost) {
				granted[i] = true
			}
		}
		return granted
	}
	return nil
}

func firstIndex(reqs []AcquireRequest, id string) int {
	for i, r := range reqs {
		if r.ID == id {
			return i
		}
	}
	return -1
}

// TestRandomSequencesHoldTheInvariants drives the bucket workflow with random
// sequences and checks after every step that 0 ≤ tokens ≤ maximum, that the
// tokens granted, less those refunded, never exceed the supply, and that the
// workflow and the pure arithmetic, given the same sequence, agree on every
// grant, every token, every refund, charge and debt.
func TestRandomSequencesHoldTheInvariants(t *testing.T) {
	var refunded, charged int64 // over every sequence: the settle-ups were exercised
	defer func() {
		if !t.Failed() && (refunded == 0 || charged == 0) {
			t.Errorf("the sequences refunded %d and charged %d tokens in all: settle-ups untested", refunded, charged)
		}
	}()
	for seed := range uint64(60) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			steps := randomSteps(rand.New(rand.NewPCG(seed, 7)), 60)
			start := bucket.Spec{Name: "api", Schedule: "@every 1s", Amount: 3, Maximum: 10}
			pure, err := bucket.New(start)
			if err != nil {
				t.Fatal(err)
			}
			pure.Created = t0
			m := &model{b: pure, granted: map[string]bool{}, ticks: map[string]bool{}, supply: start.Maximum,
				grantedAt: map[string]time.Time{}, refundable: map[string]int64{}, settled: map[string]bool{}}

			h := newHarness(t)
			type observed struct {
				granted []bool
				state   Status
			}
			got := make([]observed, len(steps))
			updates := make([]*updateResult, len(steps))
			for i, s := range steps {
				h.at(s.at, func() {
					switch {
					case s.refill != nil:
						h.refill(*s.refill)
					case s.configure != nil:
						updates[i] = h.update(ConfigureUpdate, fmt.Sprint("c", i), *s.configure)
					case s.ret != nil:
						h.env.SignalWorkflow(ReturnSignal, *s.ret)
					case s.settle != nil:
						h.env.SignalWorkflow(SettleSignal, *s.settle)
					default:
						updates[i] = h.acquire(fmt.Sprint("u", i), s.acquire...)
					}
				})
				// Observe just after the step, before the next one.
				h.at(s.at+time.Microsecond, func() {
					got[i].state = h.state()
					if u := updates[i]; u != nil && s.acquire != nil && u.rejected == nil {
						got[i].granted = granted(u.resp.Results)
					}
				})
			}
			h.run(BucketInput{Spec: start}, steps[len(steps)-1].at+time.Second)

			for i, s := range steps {
				want := m.apply(s)
				st := got[i].state
				if st.Tokens < 0 || st.Tokens > st.Spec.Maximum {
					t.Fatalf("step %d (%v): %d tokens, maximum %d", i, s, st.Tokens, st.Spec.Maximum)
				}
				if st.Granted-st.Refunded > m.supply {
					t.Fatalf("step %d (%v): %d tokens granted and %d refunded, only %d ever supplied", i, s, st.Granted, st.Refunded, m.supply)
				}
				if st.Tokens != m.b.Tokens || st.Granted != m.b.Granted || st.Refunded != m.b.Refunded || st.Debt != m.b.Debt || st.Charged != m.b.Charged || st.Unrefunded != m.b.Unrefunded {
					t.Fatalf("step %d (%v): workflow has %d tokens, granted %d, refunded %d, debt %d, charged %d; the arithmetic says %d, %d, %d, %d, %d",
						i, s, st.Tokens, st.Granted, st.Refunded, st.Debt, st.Charged, m.b.Tokens, m.b.Granted, m.b.Refunded, m.b.Debt, m.b.Charged)
				}
				if s.acquire != nil {
					if want == nil {
						want = make([]bool, len(s.acquire))
					}
					g := got[i].granted
					if g == nil {
						g = make([]bool, len(s.acquire)) // rejected by the validator: nothing granted
					}
					if !reflect.DeepEqual(g, want) {
						t.Fatalf("step %d (%v): workflow granted %v, the arithmetic %v", i, s, g, want)
					}
				}
			}
			refunded += m.b.Refunded
			charged += m.b.Charged
		})
	}
}

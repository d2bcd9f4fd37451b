package workflows

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
)

// t0 is a whole minute, so every "@every 1s" tick falls on t0 + n seconds.
var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func spec5() bucket.Spec {
	return bucket.Spec{Name: "api", Schedule: "@every 1s", Amount: 5, Maximum: 5}
}

// harness runs one bucket workflow run in the test environment, with steps
// scheduled at offsets from t0. The last step retires the bucket, which ends the run.
type harness struct {
	t     *testing.T
	env   *testsuite.TestWorkflowEnvironment
	steps time.Duration
}

type updateResult struct {
	rejected error // set when the validator refused the update
	err      error // set when the handler failed
	resp     AcquireResponse
	status   Status
	done     bool
}

func newHarness(t *testing.T) *harness {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetStartTime(t0)
	Register(env)
	return &harness{t: t, env: env}
}

// at runs f at t0+d.
func (h *harness) at(d time.Duration, f func()) { h.env.RegisterDelayedCallback(f, d) }

func (h *harness) update(name, id string, arg any) *updateResult {
	r := &updateResult{}
	h.env.UpdateWorkflow(name, id, &testsuite.TestUpdateCallback{
		OnAccept: func() {},
		OnReject: func(err error) { r.rejected, r.done = err, true },
		OnComplete: func(v any, err error) {
			r.err, r.done = err, true
			switch v := v.(type) {
			case AcquireResponse:
				r.resp = v
			case Status:
				r.status = v
			}
		},
	}, arg)
	return r
}

func (h *harness) acquire(id string, reqs ...AcquireRequest) *updateResult {
	return h.update(AcquireUpdate, id, AcquireBatch{Requests: reqs})
}

func (h *harness) refill(r Refill) { h.env.SignalWorkflow(RefillSignal, r) }

func (h *harness) state() Status {
	h.t.Helper()
	v, err := h.env.QueryWorkflow(StateQuery)
	if err != nil {
		h.t.Fatalf("query: %v", err)
	}
	var st Status
	if err := v.Get(&st); err != nil {
		h.t.Fatal(err)
	}
	return st
}

// run executes the workflow with in, retiring it at t0+end unless it ends sooner.
func (h *harness) run(in BucketInput, end time.Duration) {
	h.t.Helper()
	h.at(end, func() { h.update(RetireUpdate, "retire", nil) })
	h.env.ExecuteWorkflow(BucketWorkflowType, in)
	if !h.env.IsWorkflowCompleted() {
		h.t.Fatal("workflow did not complete")
	}
}

func req(id string, cost int64) AcquireRequest { return AcquireRequest{ID: id, Cost: cost} }

func granted(results []Outcome) []bool {
	g := make([]bool, len(results))
	for i, r := range results {
		g[i] = r.Granted
	}
	return g
}

func TestAcquireGrantsAndPartialBatch(t *testing.T) {
	h := newHarness(t)
	var first, second *updateResult
	var mid Status
	h.at(100*time.Millisecond, func() { first = h.acquire("u1", req("a", 1), req("b", 1)) })
	h.at(200*time.Millisecond, func() { second = h.acquire("u2", req("c", 2), req("d", 2), req("e", 1)) })
	h.at(300*time.Millisecond, func() { mid = h.state() })
	h.run(BucketInput{Spec: spec5()}, time.Second/2)

	if first.rejected != nil || !reflect.DeepEqual(granted(first.resp.Results), []bool{true, true}) || first.resp.Tokens != 3 {
		t.Errorf("first batch: %+v", first)
	}
	want := []Outcome{{Granted: true}, {RetryAfter: 800 * time.Millisecond}, {RetryAfter: 800 * time.Millisecond}}
	if second.rejected != nil || !reflect.DeepEqual(second.resp.Results, want) || second.resp.Tokens != 1 {
		t.Errorf("partial batch: got %+v / %+v, want results %+v and 1 token", second.rejected, second.resp, want)
	}
	if got, want := second.resp.NextRefill, t0.Add(time.Second); !got.Equal(want) {
		t.Errorf("NextRefill = %v, want %v", got, want)
	}
	if mid.Tokens != 1 || mid.Granted != 4 || mid.Denied != 3 || mid.Updates != 2 {
		t.Errorf("state = %+v; want 1 token, 4 granted, 3 denied, 2 updates", mid)
	}
}

func TestAcquireDeniedByValidator(t *testing.T) {
	h := newHarness(t)
	var take, denied, reported *updateResult
	var after Status
	h.at(100*time.Millisecond, func() { take = h.acquire("u1", req("a", 5)) })
	h.at(250*time.Millisecond, func() { denied = h.acquire("u2", req("b", 2), req("c", 4)) })
	h.at(260*time.Millisecond, func() { after = h.state() })
	h.at(time.Second+10*time.Millisecond, func() { h.refill(Refill{ID: "tick-1", Tick: t0.Add(time.Second)}) })
	h.at(time.Second+20*time.Millisecond, func() {
		reported = h.update(AcquireUpdate, "u3", AcquireBatch{Requests: []AcquireRequest{req("b", 2)}, Rejected: 6})
	})
	h.run(BucketInput{Spec: spec5()}, 2*time.Second)

	if take.rejected != nil || !take.resp.Results[0].Granted {
		t.Fatalf("taking all 5 tokens: %+v", take)
	}
	resp, ok := rateLimited(denied.rejected)
	if !ok {
		t.Fatalf("empty bucket: rejected = %v, want a RateLimited error", denied.rejected)
	}
	var appErr *temporal.ApplicationError
	if !errors.As(denied.rejected, &appErr) || appErr.NonRetryable() || appErr.Category() != temporal.ApplicationErrorCategoryBenign {
		t.Errorf("RateLimited error must be retryable and benign: %v", denied.rejected)
	}
	// b waits for the 1s tick; c (4) no longer fits after b takes 2 of its 5, so waits for 2s.
	want := AcquireResponse{Bucket: "api", Results: []Outcome{{RetryAfter: 750 * time.Millisecond}, {RetryAfter: 1750 * time.Millisecond}}, NextRefill: t0.Add(time.Second)}
	if !reflect.DeepEqual(resp, want) {
		t.Errorf("details = %+v, want %+v", resp, want)
	}
	// A rejection writes no history: the state is untouched and no update was counted.
	if after.Tokens != 0 || after.Denied != 0 || after.Updates != 1 {
		t.Errorf("state after rejection = %+v; want 0 tokens, 0 denied, 1 update", after)
	}
	if reported.rejected != nil || !reported.resp.Results[0].Granted {
		t.Fatalf("after the refill: %+v", reported)
	}
	st := h.stateAfter(t)
	if st.Denied != 6 || st.Granted != 7 {
		t.Errorf("final state %+v; want the 6 reported rejected tokens counted as denied and 7 granted", st)
	}
}

func TestRefusedBatchesComeBackOneAfterAnother(t *testing.T) {
	h := newHarness(t)
	var take *updateResult
	var before, after []*updateResult
	h.at(100*time.Millisecond, func() { take = h.acquire("take", req("a", 5)) })
	for i := range 4 { // refused together, told the same refill
		h.at(200*time.Millisecond, func() { before = append(before, h.acquire(fmt.Sprint("before", i), req(fmt.Sprint("b", i), 1))) })
	}
	h.at(time.Second+10*time.Millisecond, func() { h.refill(Refill{ID: "tick-1", Tick: t0.Add(time.Second)}) })
	h.at(time.Second+20*time.Millisecond, func() { h.acquire("retake", req("c", 5)) })
	for i := range 2 { // refused for the next refill: counted from the first again
		h.at(time.Second+30*time.Millisecond, func() { after = append(after, h.acquire(fmt.Sprint("after", i), req(fmt.Sprint("d", i), 1))) })
	}
	h.run(BucketInput{Spec: spec5()}, 3*time.Second)

	if take.rejected != nil {
		t.Fatalf("taking all 5 tokens: %v", take.rejected)
	}
	check := func(name string, rs []*updateResult, first time.Duration) {
		t.Helper()
		for i, r := range rs {
			resp, ok := rateLimited(r.rejected)
			if !ok {
				t.Fatalf("%s %d: %v, want a RateLimited rejection", name, i, r.rejected)
			}
			if want := first + time.Duration(i)*bucket.ComebackGap; resp.Results[0].RetryAfter != want {
				t.Errorf("%s %d: retry after %v, want %v", name, i, resp.Results[0].RetryAfter, want)
			}
		}
	}
	check("refused before the refill", before, 800*time.Millisecond)
	check("refused after it", after, 970*time.Millisecond)
}

// stateAfter returns the status the workflow returned when retired.
func (h *harness) stateAfter(t *testing.T) Status {
	t.Helper()
	var st Status
	if err := h.env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestAcquireInvalidRequests(t *testing.T) {
	h := newHarness(t)
	var zero, tooBig, mixed, noID, empty *updateResult
	h.at(10*time.Millisecond, func() { zero = h.acquire("u1", req("a", 0)) })
	h.at(20*time.Millisecond, func() { tooBig = h.acquire("u2", req("b", 6)) })
	h.at(30*time.Millisecond, func() { mixed = h.acquire("u3", req("c", -1), req("d", 2), req("d", 1)) })
	h.at(40*time.Millisecond, func() { noID = h.acquire("u4", req("", 1)) })
	h.at(50*time.Millisecond, func() { empty = h.acquire("u5") })
	h.run(BucketInput{Spec: spec5()}, 100*time.Millisecond)

	for name, r := range map[string]*updateResult{"cost 0": zero, "cost above maximum": tooBig, "no id": noID, "empty batch": empty} {
		var appErr *temporal.ApplicationError
		if !errors.As(r.rejected, &appErr) || appErr.Type() != ErrInvalidRequest || !appErr.NonRetryable() {
			t.Errorf("%s: rejected = %v, want a non-retryable InvalidRequest", name, r.rejected)
		}
	}
	if !strings.Contains(tooBig.rejected.Error(), "more than the bucket's maximum (5)") {
		t.Errorf("cost above maximum: %v", tooBig.rejected)
	}
	if mixed.rejected != nil {
		t.Fatalf("a batch with one valid request was rejected: %v", mixed.rejected)
	}
	got := mixed.resp.Results
	if got[0].Invalid == "" || !got[1].Granted || !strings.Contains(got[2].Invalid, "appears twice") || mixed.resp.Tokens != 3 {
		t.Errorf("mixed batch = %+v", mixed.resp)
	}
}

func TestRefillCapAndDuplicateTick(t *testing.T) {
	h := newHarness(t)
	var states []Status
	snap := func() { states = append(states, h.state()) }
	h.at(10*time.Millisecond, func() { h.acquire("u1", req("a", 4)) })
	h.at(20*time.Millisecond, snap)
	h.at(time.Second+50*time.Millisecond, func() { h.refill(Refill{ID: "t1", Tick: t0.Add(time.Second), Amount: 2}) })
	h.at(time.Second+60*time.Millisecond, snap)
	h.at(time.Second+70*time.Millisecond, func() { h.acquire("u2", req("b", 3)) })
	h.at(time.Second+80*time.Millisecond, func() { h.refill(Refill{ID: "t1", Tick: t0.Add(time.Second), Amount: 2}) }) // the same tick again
	h.at(time.Second+90*time.Millisecond, snap)
	h.at(2*time.Second+50*time.Millisecond, func() { h.refill(Refill{ID: "t2", Tick: t0.Add(2 * time.Second)}) })
	h.at(2*time.Second+60*time.Millisecond, func() { h.refill(Refill{ID: "t3", Tick: t0.Add(3 * time.Second)}) })
	h.at(2*time.Second+70*time.Millisecond, snap)
	h.run(BucketInput{Spec: spec5()}, 3*time.Second)

	tokens := []int64{}
	for _, s := range states {
		tokens = append(tokens, s.Tokens)
	}
	if want := []int64{1, 3, 0, 5}; !reflect.DeepEqual(tokens, want) {
		t.Errorf("tokens after take, refill, duplicate refill, two refills = %v, want %v", tokens, want)
	}
	last := states[len(states)-1]
	if !last.LastTick.Equal(t0.Add(3*time.Second)) || last.RefillLag == 0 {
		t.Errorf("last tick %v, lag %v", last.LastTick, last.RefillLag)
	}
}

func TestDuplicateUpdateAndRequestIDs(t *testing.T) {
	h := newHarness(t)
	var first, again, sameRequest *updateResult
	var st Status
	h.at(10*time.Millisecond, func() { first = h.acquire("u1", req("a", 2)) })
	h.at(20*time.Millisecond, func() { again = h.acquire("u1", req("a", 2)) })                    // the SDK retrying the same update
	h.at(30*time.Millisecond, func() { sameRequest = h.acquire("u2", req("a", 2), req("b", 3)) }) // a new update carrying a granted request
	h.at(40*time.Millisecond, func() { st = h.state() })
	h.run(BucketInput{Spec: spec5()}, 100*time.Millisecond)

	if !first.resp.Results[0].Granted || !again.resp.Results[0].Granted {
		t.Fatalf("first %+v, again %+v", first, again)
	}
	if !reflect.DeepEqual(granted(sameRequest.resp.Results), []bool{true, true}) {
		t.Errorf("re-sent request: %+v", sameRequest.resp)
	}
	if st.Tokens != 0 || st.Granted != 5 {
		t.Errorf("state = %+v; want 2 + 3 tokens granted once each, 0 left", st)
	}
}

func TestReconfigureKeepsTokens(t *testing.T) {
	h := newHarness(t)
	var lowered, raised, renamed, invalid *updateResult
	var st Status
	big := bucket.Spec{Name: "api", Schedule: "@hourly", Amount: 100, Maximum: 100, Initial: new(int64(40))}
	h.at(10*time.Millisecond, func() {
		lowered = h.update(ConfigureUpdate, "c1", bucket.Spec{Name: "api", Schedule: "@every 1s", Amount: 5, Maximum: 25})
	})
	h.at(20*time.Millisecond, func() {
		raised = h.update(ConfigureUpdate, "c2", bucket.Spec{Name: "api", Schedule: "@every 2s", Amount: 7, Maximum: 50})
	})
	h.at(30*time.Millisecond, func() {
		renamed = h.update(ConfigureUpdate, "c3", bucket.Spec{Name: "other", Schedule: "@hourly", Amount: 1, Maximum: 1})
	})
	h.at(40*time.Millisecond, func() {
		invalid = h.update(ConfigureUpdate, "c4", bucket.Spec{Name: "api", Schedule: "0 * * * * *", Amount: 1, Maximum: 1})
	})
	h.at(50*time.Millisecond, func() { st = h.state() })
	h.run(BucketInput{Spec: big}, 100*time.Millisecond)

	if lowered.err != nil || lowered.status.Tokens != 25 {
		t.Errorf("lowering maximum to 25 under 40 tokens: %+v", lowered)
	}
	if raised.err != nil || raised.status.Tokens != 25 || raised.status.Spec.Maximum != 50 {
		t.Errorf("raising maximum: %+v", raised)
	}
	for name, r := range map[string]*updateResult{"rename": renamed, "6-field cron": invalid} {
		var appErr *temporal.ApplicationError
		if !errors.As(r.rejected, &appErr) || appErr.Type() != ErrInvalidSpec {
			t.Errorf("%s: rejected = %v, want InvalidSpec", name, r.rejected)
		}
	}
	if st.Spec.Schedule != "@every 2s" || st.Spec.Amount != 7 || st.Tokens != 25 {
		t.Errorf("state = %+v", st)
	}
}

// continuedAsNew returns the input the run continued as new with.
func continuedAsNew(t *testing.T, env *testsuite.TestWorkflowEnvironment) BucketInput {
	t.Helper()
	var can *workflow.ContinueAsNewError
	if err := env.GetWorkflowError(); !errors.As(err, &can) {
		t.Fatalf("workflow ended with %v, want continue-as-new", err)
	}
	if can.WorkflowType.Name != BucketWorkflowType {
		t.Errorf("continued as %q", can.WorkflowType.Name)
	}
	var in BucketInput
	if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &in); err != nil {
		t.Fatal(err)
	}
	return in
}

func TestContinueAsNewCarriesStateAndIDs(t *testing.T) {
	// Run 1: three updates reach MaxUpdatesPerRun; a refill is waiting when it ends.
	h := newHarness(t)
	in := BucketInput{Spec: spec5(), MaxUpdatesPerRun: 3}
	h.at(10*time.Millisecond, func() { h.acquire("u1", req("a", 1)) })
	h.at(20*time.Millisecond, func() { h.acquire("u2", req("b", 1)) })
	h.at(time.Second+10*time.Millisecond, func() {
		h.refill(Refill{ID: "tick-1", Tick: t0.Add(time.Second), Amount: 1})
		h.acquire("u3", req("c", 3))
	})
	h.env.ExecuteWorkflow(BucketWorkflowType, in)
	next := continuedAsNew(t, h.env)
	if next.run != 1 || next.State == nil || next.State.Granted != 5 || next.State.Tokens != 1 {
		t.Fatalf("carried state = run %d, %+v; want run 1 with 5 granted and 1 token", next.run, next.State)
	}
	if next.granted.len() != 3 || next.ticks.len() != 1 || next.MaxUpdatesPerRun != 3 {
		t.Errorf("carried IDs: %d granted, %d ticks, max updates %d", next.granted.len(), next.ticks.len(), next.MaxUpdatesPerRun)
	}

	// Run 2: the same request and the same tick arrive again, and are applied once.
	h2 := newHarness(t)
	var dup *updateResult
	var st Status
	h2.at(10*time.Millisecond, func() {
		h2.refill(Refill{ID: "tick-1", Tick: t0.Add(time.Second), Amount: 1})
		dup = h2.acquire("u3", req("c", 3))
	})
	h2.at(20*time.Millisecond, func() { st = h2.state() })
	h2.run(next, 100*time.Millisecond)
	if dup.rejected != nil || !dup.resp.Results[0].Granted {
		t.Errorf("retried request across runs: %+v", dup)
	}
	if st.Tokens != 1 || st.Granted != 5 || st.Run != 1 {
		t.Errorf("run 2 state = %+v; want 1 token, 5 granted, run 1", st)
	}
}

func TestContinueAsNewWhenSuggested(t *testing.T) {
	h := newHarness(t)
	h.env.SetContinueAsNewSuggested(true)
	h.at(10*time.Millisecond, func() { h.acquire("u1", req("a", 2)) })
	h.env.ExecuteWorkflow(BucketWorkflowType, BucketInput{Spec: spec5()})
	next := continuedAsNew(t, h.env)
	if next.State == nil || next.State.Tokens > 5 {
		t.Errorf("carried %+v", next.State)
	}
}

func TestInvalidSpecFailsTheWorkflow(t *testing.T) {
	h := newHarness(t)
	h.env.ExecuteWorkflow(BucketWorkflowType, BucketInput{Spec: bucket.Spec{Name: "x", Schedule: "nope", Amount: 1, Maximum: 1}})
	var appErr *temporal.ApplicationError
	if err := h.env.GetWorkflowError(); !errors.As(err, &appErr) || appErr.Type() != ErrInvalidSpec {
		t.Errorf("workflow error = %v, want InvalidSpec", err)
	}
}

func TestReconfigureMovesToItsTaskQueue(t *testing.T) {
	h := newHarness(t)
	moved := spec5()
	moved.TaskQueue = "api-limits"
	h.at(10*time.Millisecond, func() { h.update(ConfigureUpdate, "c1", moved) })
	h.env.ExecuteWorkflow(BucketWorkflowType, BucketInput{Spec: spec5()})
	next := continuedAsNew(t, h.env)
	var can *workflow.ContinueAsNewError
	errors.As(h.env.GetWorkflowError(), &can)
	if can.TaskQueueName != "api-limits" || next.Spec.TaskQueue != "api-limits" || next.State.Tokens != 5 {
		t.Errorf("continued on %q with %+v", can.TaskQueueName, next)
	}
}

func TestLeaseLentAndReturned(t *testing.T) {
	h := newHarness(t)
	rich := bucket.Spec{Name: "api", Schedule: "@every 10s", Amount: 100, Maximum: 100}
	var lent, tooMuch, onlyLease *updateResult
	var afterReturn, afterLateReturn Status
	lease := func(id string, cost int64) AcquireRequest { return AcquireRequest{ID: id, Cost: cost, Optional: true} }
	h.at(time.Second, func() { lent = h.acquire("u1", req("a", 1), lease("lease-1", 20)) })
	h.at(2*time.Second, func() { tooMuch = h.acquire("u2", req("b", 1), lease("lease-2", 40)) }) // 78 left: 40 would leave less than it lends
	h.at(3*time.Second, func() { onlyLease = h.acquire("u3", lease("lease-3", 1)) })
	h.at(4*time.Second, func() {
		h.env.SignalWorkflow(ReturnSignal, Return{ID: "lease-1", Tokens: 15})
		h.env.SignalWorkflow(ReturnSignal, Return{ID: "lease-1", Tokens: 15}) // again
	})
	h.at(5*time.Second, func() { afterReturn = h.state() })
	h.at(10*time.Second+100*time.Millisecond, func() {
		h.refill(Refill{ID: "t10", Tick: t0.Add(10 * time.Second), Amount: 1})
		h.env.SignalWorkflow(ReturnSignal, Return{ID: "lease-1", Tokens: 5}) // its window has ended
	})
	h.at(11*time.Second, func() { afterLateReturn = h.state() })
	h.run(BucketInput{Spec: rich}, 12*time.Second)

	if !reflect.DeepEqual(granted(lent.resp.Results), []bool{true, true}) || lent.resp.Tokens != 79 || !lent.resp.NextTick.Equal(t0.Add(10*time.Second)) {
		t.Errorf("lease of 20: %+v", lent.resp)
	}
	if !reflect.DeepEqual(granted(tooMuch.resp.Results), []bool{true, false}) || tooMuch.resp.Results[1].RetryAfter != 0 || tooMuch.resp.Tokens != 78 {
		t.Errorf("lease of 40 from 78: %+v", tooMuch.resp)
	}
	var appErr *temporal.ApplicationError
	if !errors.As(onlyLease.rejected, &appErr) || appErr.Type() != ErrInvalidRequest {
		t.Errorf("a batch of only a lease: %v", onlyLease.rejected)
	}
	if afterReturn.Tokens != 93 || afterReturn.Granted != 7 || afterReturn.Denied != 0 {
		t.Errorf("after returning 15 (twice): %+v; want 93 tokens, 7 granted, nothing denied", afterReturn.State)
	}
	if afterLateReturn.Tokens != 94 {
		t.Errorf("a return after the window's refill changed the tokens: %d, want 94", afterLateReturn.Tokens)
	}
}

// rateLimited reports whether err is the validator's RateLimited answer, and returns its details.
func rateLimited(err error) (AcquireResponse, bool) {
	var appErr *temporal.ApplicationError
	var resp AcquireResponse
	if !errors.As(err, &appErr) || appErr.Type() != ErrRateLimited || appErr.Details(&resp) != nil {
		return AcquireResponse{}, false
	}
	return resp, true
}

package histories

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

// The histories TestRecordHistories writes, each as <name><TB_RECORD_SUFFIX>.json.
const (
	grantsFile       = "bucket-grants-denials-refills"
	leasesFile       = "bucket-leases"
	reconfigureFile  = "bucket-reconfigure"
	firstRunFile     = "bucket-continue-as-new-run1"
	continuedRunFile = "bucket-continue-as-new-run2"
	retireFile       = "bucket-retire"
	scheduledFile    = "refill-schedule"
	missingFile      = "refill-missing-bucket"
	healedFile       = "bucket-started-by-refill"
	retiredFile      = "refill-retired-bucket"
	garbageFile      = "bucket-garbage"
	settleFile       = "bucket-settle"
	upstreamFile     = "bucket-upstream"
	shadowFile       = "bucket-shadow"
	keyedFirstFile   = "bucket-keyed-shard0-run1"
	keyedSecondFile  = "bucket-keyed-shard0-run2"
	keyedRefillFile  = "refill-keyed"
	authorizedFile   = "bucket-authorized-ticks"
	leadFile         = "bucket-authorized-lead"
)

var files = []string{grantsFile, leasesFile, reconfigureFile, firstRunFile, continuedRunFile,
	retireFile, scheduledFile, missingFile, healedFile, retiredFile, garbageFile,
	settleFile, upstreamFile, shadowFile, keyedFirstFile, keyedSecondFile, keyedRefillFile, authorizedFile, leadFile}

// wait bounds every wait for the server or the worker.
const wait = 30 * time.Second

var suffixRE = regexp.MustCompile(`^[A-Za-z0-9._-]*$`)

// TestRecordHistories drives bucket and refill workflows through tb's real
// paths on an in-process Temporal server, and writes the history of each run
// to workflows/testdata/histories, where the replay test of package workflows
// replays them. Committed histories are never rewritten: it refuses to
// overwrite a file, so a new build records with a new TB_RECORD_SUFFIX.
//
//	TB_RECORD_HISTORIES=1 TB_RECORD_SUFFIX=-<commit> go test ./cmd/internal/histories -run TestRecordHistories -v
func TestRecordHistories(t *testing.T) {
	if os.Getenv("TB_RECORD_HISTORIES") != "1" {
		t.Skip("set TB_RECORD_HISTORIES=1 to record histories into workflows/testdata/histories")
	}
	suffix := os.Getenv("TB_RECORD_SUFFIX")
	if !suffixRE.MatchString(suffix) {
		t.Fatalf("TB_RECORD_SUFFIX %q: use letters, digits, '.', '_' and '-' only", suffix)
	}
	dir := filepath.Join("..", "..", "..", "workflows", "testdata", "histories")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		path := filepath.Join(dir, name+suffix+".json")
		if _, err := os.Stat(path); err == nil {
			t.Fatalf("%s exists: recorded histories are never rewritten; set TB_RECORD_SUFFIX to add new ones", path)
		}
	}
	r := &recorder{s: testserver.NewServer(t), dir: dir, suffix: suffix}
	t.Run("grants, denials and refills", r.grantsDenialsRefills)
	t.Run("leases", r.leases)
	t.Run("reconfigure", r.reconfigure)
	t.Run("continue as new", r.continueAsNew)
	t.Run("retire", r.retire)
	t.Run("refill from a schedule", r.refillFromSchedule)
	t.Run("refill of a missing bucket", r.refillMissingBucket)
	t.Run("garbage", r.garbage)
	t.Run("settle", r.settleUps)
	t.Run("upstream", r.upstream)
	t.Run("shadow", r.shadow)
	t.Run("keyed", r.keyed)
	t.Run("authorized ticks", r.authorizedTicks(authorizedFile, "authorized", 2*time.Second, 1))
	t.Run("authorized lead", r.authorizedTicks(leadFile, "lead", time.Second, int(bucket.AuthorizeLead/time.Second)))
}

type recorder struct {
	s      *testserver.Server
	dir    string
	suffix string
}

// yearStart is the latest tick of an @yearly schedule, as a refill workflow would signal it.
func yearStart() workflows.Refill {
	tick := time.Date(time.Now().UTC().Year(), 1, 1, 0, 0, 0, 0, time.UTC)
	return workflows.Refill{ID: tick.Format(time.RFC3339), Tick: tick}
}

// grantsDenialsRefills: grants through the Acquirer, a partial batch,
// denials (no history: one the validator turned away, one the Acquirer
// refused itself, the bucket having just refused until its next tick)
// reported when that Acquirer closes, refills with a tick and manual ones
// (one capped), a duplicate refill ID and a duplicate request ID.
func (r *recorder) grantsDenialsRefills(t *testing.T) {
	spec := bucket.Spec{Name: "grants", Schedule: "@yearly", Amount: 5, Maximum: 10, Initial: new(int64(4))}
	r.sync(t, spec)
	a := newAcquirer(t, r.s)

	r.grant(t, a, spec.Name, "grant-1", 1, 3)
	r.grant(t, a, spec.Name, "grant-2", 2, 1)
	resp := r.acquireBatch(t, spec.Name, "partial-batch", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{
		{ID: "partial-1", Cost: 1}, {ID: "partial-2", Cost: 1}, {ID: "partial-3", Cost: 11}}})
	if res := resp.Results; len(res) != 3 || !res[0].Granted || res[1].Granted || res[1].RetryAfter <= 0 || res[2].Invalid == "" || resp.Tokens != 0 {
		t.Fatalf("partial batch: %+v; want granted, denied with a retry-after, invalid, and 0 tokens left", resp)
	}
	r.deny(t, a, spec.Name, "denied-1", 1)
	r.deny(t, a, spec.Name, "denied-2", 2)
	// Refused, this Acquirer refuses locally until the tick the bucket named,
	// months away: closing it reports the 3 tokens denied, and another carries on.
	r.close(t, a, workflows.BucketID(spec.Name))
	a = newAcquirer(t, r.s)
	tick := yearStart()
	r.signal(t, spec.Name, workflows.RefillSignal, tick)
	r.grant(t, a, spec.Name, "grant-3", 1, 4)
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: "manual-1", Amount: 3})
	r.signal(t, spec.Name, workflows.RefillSignal, tick) // a duplicate: ignored
	r.grant(t, a, spec.Name, "grant-4", 2, 5)
	r.grant(t, a, spec.Name, "grant-1", 1, 5) // a duplicate: granted again, for free
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: "manual-2", Amount: 100})
	r.grant(t, a, spec.Name, "grant-5", 10, 0) // the refill was capped at 10
	r.wantState(t, spec.Name, 0, 17, 4)
	r.save(t, grantsFile, workflows.BucketID(spec.Name), r.runID(t, spec.Name))
}

// leases: optional requests lent while the bucket is rich, one refused,
// returns (one applied, one repeated, one late, after a refill) and a grant
// showing the tokens.
func (r *recorder) leases(t *testing.T) {
	spec := bucket.Spec{Name: "leases", Schedule: "@yearly", Amount: 10, Maximum: 20}
	r.sync(t, spec)
	lease := func(update, request, id string, cost int64, lent bool, tokens int64) {
		t.Helper()
		resp := r.acquireBatch(t, spec.Name, update, workflows.AcquireBatch{Requests: []workflows.AcquireRequest{
			{ID: request, Cost: 1}, {ID: id, Cost: cost, Optional: true}}})
		if res := resp.Results; len(res) != 2 || !res[0].Granted || res[1].Granted != lent || resp.Tokens != tokens {
			t.Fatalf("%s: %+v; want the request granted, the lease lent %t, %d tokens left", update, resp, lent, tokens)
		}
	}
	lease("lease-a", "lease-req-1", "lease-a", 5, true, 14)
	r.signal(t, spec.Name, workflows.ReturnSignal, workflows.Return{ID: "lease-a", Tokens: 3})
	r.wantState(t, spec.Name, 17, 3, 0)
	r.signal(t, spec.Name, workflows.ReturnSignal, workflows.Return{ID: "lease-a", Tokens: 2}) // returned already: ignored
	lease("lease-b", "lease-req-2", "lease-b", 5, true, 11)
	lease("lease-c", "lease-req-3", "lease-c", 6, false, 10) // 10 tokens are too few to lend 6
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: "manual-1", Amount: 2})
	r.signal(t, spec.Name, workflows.ReturnSignal, workflows.Return{ID: "lease-b", Tokens: 5}) // after a refill: ignored
	r.grant(t, newAcquirer(t, r.s), spec.Name, "lease-req-4", 1, 11)
	r.wantState(t, spec.Name, 11, 11, 0)
	r.save(t, leasesFile, workflows.BucketID(spec.Name), r.runID(t, spec.Name))
}

// garbage: what no Schedule or tb acquirer sends, and what tb sends since
// the build of 2026-12-01: a refill from the future and one with an ID too
// long to remember (both ignored), a request ID too long (invalid), a report
// of refused tokens, and a lease whose answer says how long it lasts.
func (r *recorder) garbage(t *testing.T) {
	spec := bucket.Spec{Name: "garbage", Schedule: "@yearly", Amount: 10, Maximum: 20}
	r.sync(t, spec)
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: "future", Tick: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)})
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: strings.Repeat("x", workflows.MaxIDLength+1), Amount: 1})
	resp := r.acquireBatch(t, spec.Name, "long-id", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{
		{ID: strings.Repeat("y", workflows.MaxIDLength+1), Cost: 1}, {ID: "short", Cost: 1}}})
	if res := resp.Results; len(res) != 2 || res[0].Invalid == "" || !res[1].Granted {
		t.Fatalf("long id: %+v; want the long ID invalid and the short one granted", resp)
	}
	r.signal(t, spec.Name, workflows.ReportSignal, workflows.Report{Rejected: 7})
	resp = r.acquireBatch(t, spec.Name, "lease", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{
		{ID: "with-lease", Cost: 1}, {ID: "lease-1", Cost: 5, Optional: true}, {ID: "lease-2", Cost: 5, Optional: true}}})
	if res := resp.Results; len(res) != 3 || !res[1].Granted || res[2].Granted || resp.LeaseFor <= 0 {
		t.Fatalf("lease: %+v; want one lease of the two lent, and LeaseFor", resp)
	}
	st := r.wantState(t, spec.Name, 13, 7, 7)
	if st.Ignored != 2 {
		t.Fatalf("ignored %d refills, want 2", st.Ignored)
	}
	r.save(t, garbageFile, workflows.BucketID(spec.Name), r.runID(t, spec.Name))
}

// settleUps: settle-ups as the Acquirer sends them after a call: a refund
// (a grant of 100 that used 40 gives 60 back), a charge beyond the tokens
// left (the rest a debt), the same charge again (applied once), a refill
// with a tick that pays the debt first, a refund of more than its grant
// cost (capped at the cost), and a grant of every token left.
func (r *recorder) settleUps(t *testing.T) {
	spec := bucket.Spec{Name: "settle", Schedule: "@yearly", Amount: 100, Maximum: 200, Initial: new(int64(150))}
	r.sync(t, spec)
	a := newAcquirer(t, r.s)
	id := workflows.BucketID(spec.Name)
	settle := func(grant string, tokens int64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := a.Settle(ctx, spec.Name, grant, tokens); err != nil {
			t.Fatalf("settling %s by %d: %v", grant, tokens, err)
		}
		r.settle(t, id, "")
	}
	r.grant(t, a, spec.Name, "settle-1", 100, 50) // an estimate of 100
	settle("settle-1", -60)                       // it used 40
	st := r.wantState(t, spec.Name, 110, 100, 0)
	if st.Refunded != 60 || st.Debt != 0 {
		t.Fatalf("after the refund: %+v; want 60 refunded, no debt", st.State)
	}
	r.grant(t, a, spec.Name, "settle-2", 10, 100)
	settle("settle-2", 130) // it used 140: 100 taken, 30 owed
	want := func(tokens, debt, refunded, charged int64) {
		t.Helper()
		st := r.wantState(t, spec.Name, tokens, 110, 0)
		if st.Debt != debt || st.Refunded != refunded || st.Charged != charged {
			t.Fatalf("bucket %s: %d debt, %d refunded, %d charged; want %d, %d, %d", spec.Name, st.Debt, st.Refunded, st.Charged, debt, refunded, charged)
		}
	}
	want(0, 30, 60, 130)
	settle("settle-2", 130) // the same settle-up again: applied once
	want(0, 30, 60, 130)
	r.signal(t, spec.Name, workflows.RefillSignal, yearStart()) // 100 tokens, 30 of them paying the debt
	want(70, 0, 60, 130)
	r.grant(t, a, spec.Name, "settle-3", 5, 65)
	settle("settle-3", -8)                      // more than it cost: 5 given back
	r.grant(t, a, spec.Name, "settle-4", 70, 0) // what the settle-ups left, which a replay then compares
	st = r.wantState(t, spec.Name, 0, 185, 0)
	if st.Refunded != 65 || st.Charged != 130 || st.Debt != 0 || st.Unrefunded != 0 {
		t.Fatalf("at the end: %+v; want 65 refunded, 130 charged, no debt", st.State)
	}
	r.save(t, settleFile, id, r.runID(t, spec.Name))
}

// upstream: what the API behind the bucket said, reported through the
// Acquirer: a pause of 3 s (a batch during it refused, by the bucket and by
// its validator), the same report again (applied once), a count of what is
// left lowering the tokens; after the pause, a grant.
func (r *recorder) upstream(t *testing.T) {
	spec := bucket.Spec{Name: "upstream", Schedule: "@yearly", Amount: 10, Maximum: 10}
	r.sync(t, spec)
	a := newAcquirer(t, r.s)
	id := workflows.BucketID(spec.Name)
	const pause = 3 * time.Second
	report := func(reportID string, u interceptor.Upstream) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := a.Report(ctx, spec.Name, reportID, u); err != nil {
			t.Fatalf("report %s: %v", reportID, err)
		}
		r.settle(t, id, "")
	}
	r.grant(t, a, spec.Name, "up-1", 1, 9)
	report("pause-1", interceptor.Upstream{Pause: pause})
	paused := r.wantState(t, spec.Name, 9, 1, 0)
	if paused.Pauses != 1 || !paused.PausedUntil.After(time.Now()) {
		t.Fatalf("after the pause: %+v; want one pause, lasting", paused.State)
	}
	// A batch the validator lets through (it repeats a granted request): the
	// paused bucket grants the new request nothing.
	resp := r.acquireBatch(t, spec.Name, "paused-batch", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{
		{ID: "up-1", Cost: 1}, {ID: "up-2", Cost: 1}}})
	if res := resp.Results; len(res) != 2 || !res[0].Granted || res[1].Granted || res[1].RetryAfter <= 0 || res[1].RetryAfter > pause || resp.Tokens != 9 {
		t.Fatalf("paused batch: %+v; want the repeat granted, the new request denied until the pause ends, 9 tokens", resp)
	}
	r.rateLimited(t, id, "paused-refused", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: "up-3", Cost: 1}}})
	repeated := time.Now()
	report("pause-1", interceptor.Upstream{Pause: pause}) // the same report: applied once
	if st := r.wantState(t, spec.Name, 9, 1, 1); !st.PausedUntil.Equal(paused.PausedUntil) || st.Pauses != 1 {
		t.Fatalf("after the repeated report: paused until %v, %d pauses; want %v, 1", st.PausedUntil, st.Pauses, paused.PausedUntil)
	}
	report("remaining-1", interceptor.Upstream{Remaining: new(int64(5))})
	if st := r.wantState(t, spec.Name, 5, 1, 1); st.Calibrations != 1 {
		t.Fatalf("after the count: %d calibrations; want 1", st.Calibrations)
	}
	// The Acquirer refuses locally for a pause from each report it sends,
	// the repeated one too: wait for both.
	end := paused.PausedUntil
	if local := repeated.Add(pause); local.After(end) {
		end = local
	}
	<-time.After(time.Until(end.Add(200 * time.Millisecond))) // waiting out the pause
	r.grant(t, a, spec.Name, "up-4", 1, 4)
	st := r.wantState(t, spec.Name, 4, 2, 1)
	if st.Pauses != 1 || st.Calibrations != 1 || st.PausedUntil.After(time.Now()) {
		t.Fatalf("at the end: %+v; want one pause, over, and one calibration", st.State)
	}
	r.save(t, upstreamFile, id, r.runID(t, spec.Name))
}

// shadow: a bucket in shadow mode grants everything, counting what it would
// have refused; switched to enforcing by a sync, it keeps its tokens and refuses.
func (r *recorder) shadow(t *testing.T) {
	spec := bucket.Spec{Name: "shadow", Schedule: "@yearly", Amount: 3, Maximum: 3, Mode: bucket.ModeShadow}
	r.sync(t, spec)
	a := newAcquirer(t, r.s)
	acquire := func(id string, cost, tokens int64, shadow bool) {
		t.Helper()
		d := r.acquireKey(t, a, interceptor.Key{Bucket: spec.Name}, id, cost)
		if !d.Granted || d.Shadow != shadow || d.Remaining != tokens {
			t.Fatalf("acquire %s of %d: %+v; want granted, shadow %t, %d tokens left", id, cost, d, shadow, tokens)
		}
	}
	acquire("shadow-1", 2, 1, false)
	acquire("shadow-2", 2, 1, true) // would be denied
	resp := r.acquireBatch(t, spec.Name, "shadow-batch", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{
		{ID: "shadow-3", Cost: 1}, {ID: "shadow-4", Cost: 1}, {ID: "shadow-5", Cost: 4}}})
	if res := resp.Results; len(res) != 3 || !res[0].Granted || res[0].Shadow || !res[1].Granted || !res[1].Shadow || res[2].Invalid == "" || resp.Tokens != 0 {
		t.Fatalf("shadow batch: %+v; want granted, granted in shadow, invalid, and 0 tokens left", resp)
	}
	acquire("shadow-6", 1, 0, true)
	if st := r.wantState(t, spec.Name, 0, 3, 0); st.WouldDeny != 4 {
		t.Fatalf("would deny %d tokens; want 4", st.WouldDeny)
	}
	enforced := spec
	enforced.Mode = bucket.ModeEnforce
	r.sync(t, enforced)
	refused := r.rateLimited(t, workflows.BucketID(spec.Name), "enforced", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: "shadow-7", Cost: 1}}})
	if refused.Tokens != 0 {
		t.Fatalf("enforcing: refused with %+v; want 0 tokens", refused)
	}
	if st := r.wantState(t, spec.Name, 0, 3, 0); st.WouldDeny != 4 || st.Spec.Shadow() {
		t.Fatalf("enforcing: %+v; want the would-deny count kept, the spec enforcing", st)
	}
	r.save(t, shadowFile, workflows.BucketID(spec.Name), r.runID(t, spec.Name))
}

// Keys of the keyed bucket that shard 0 of 2 holds.
const (
	keyBob   = "bob"
	keyCarol = "carol"
	keyHeidi = "heidi"
)

// keyed: a keyed bucket (3 tokens a key, 2 a tick, on 2 shards) whose shard
// 0 continues as new every 4 updates, synced by operator.Apply. Run 1: grants
// of three keys, one key refused by the validator, a refill its Schedule
// started (one signal to each shard; that refill workflow is recorded too),
// a new key, settle-ups (a charge into debt, a refund, a refund late after
// the tick), upstream reports (one key's count, another's pause) and a batch
// in which the paused key is refused and another granted. Run 2: a manual
// refill of the indebted key, a grant, a repeat of run 1's first request.
func (r *recorder) keyed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	spec := bucket.Spec{Name: "keyed", Schedule: "@yearly", Amount: 2, Maximum: 3, Keyed: true, Shards: 2}
	for _, key := range []string{keyBob, keyCarol, keyHeidi} {
		if n := bucket.KeyShard(key, spec.ShardCount()); n != 0 {
			t.Fatalf("key %s is on shard %d", key, n)
		}
	}
	// Shard 0 started as Apply starts it, but continuing as new every 4
	// updates; Apply finds it so, and starts shard 1 and the Schedule.
	id := workflows.ShardID(spec.Name, 0)
	started := spec
	started.TaskQueue = workflows.TaskQueue
	run, err := r.s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: workflows.TaskQueue, Memo: map[string]any{workflows.SpecMemo: started},
	}, workflows.BucketWorkflowType, workflows.BucketInput{Spec: started, Shard: 0, MaxUpdatesPerRun: 4})
	if err != nil {
		t.Fatal(err)
	}
	first := run.GetRunID()
	r.sync(t, spec)
	a := newAcquirer(t, r.s)
	key := func(k string) interceptor.Key {
		return interceptor.Key{Bucket: spec.Name, Key: k, Shards: spec.ShardCount()}
	}
	grant := func(k, reqID string, cost, tokens int64) {
		t.Helper()
		if d := r.acquireKey(t, a, key(k), reqID, cost); !d.Granted || d.Remaining != tokens {
			t.Fatalf("acquire %s of %d for key %s: %+v; want granted, %d tokens left to the key", reqID, cost, k, d, tokens)
		}
	}
	settle := func(k, grant string, tokens int64) {
		t.Helper()
		if err := a.SettleKey(ctx, key(k), grant, tokens); err != nil {
			t.Fatalf("settling %s by %d: %v", grant, tokens, err)
		}
		r.settle(t, id, "")
	}
	report := func(k, reportID string, u interceptor.Upstream) {
		t.Helper()
		if err := a.ReportKey(ctx, key(k), reportID, u); err != nil {
			t.Fatalf("report %s: %v", reportID, err)
		}
		r.settle(t, id, "")
	}
	wantKey := func(k string, tokens, debt int64, paused bool) {
		t.Helper()
		ks, err := operator.KeyState(ctx, r.s.Client, spec.Name, k)
		if err != nil {
			t.Fatal(err)
		}
		if !ks.Held || ks.Tokens != tokens || ks.Debt != debt || ks.PausedUntil.IsZero() == paused {
			t.Fatalf("key %s: %+v; want held, %d tokens, %d debt, paused %t", k, ks, tokens, debt, paused)
		}
	}

	grant(keyBob, "ka-1", 2, 1)
	grant(keyCarol, "kb-1", 3, 0)
	if d := r.acquireKey(t, a, key(keyCarol), "kb-2", 1); d.Granted || d.RetryAfter <= 0 || d.Remaining != 0 {
		t.Fatalf("acquire kb-2 of carol's empty key: %+v; want denied with a retry-after", d)
	}
	// A triggered refill's tick is when it started, to the second: start it
	// in a later second than ka-1's grant, which is then from before the tick.
	<-time.After(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 50*time.Millisecond)))
	refillID, refillRun := r.triggerRefill(t, spec.Name, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED)
	r.settle(t, id, "")
	r.settle(t, workflows.ShardID(spec.Name, 1), "")
	wantKey(keyBob, 3, 0, false)
	wantKey(keyCarol, 2, 0, false)
	grant(keyHeidi, "kc-1", 1, 2) // a new key; the batch reports kb-2's denial
	settle(keyCarol, "kb-1", 3)   // it used 6: the key's 2 and 1 owed
	settle(keyHeidi, "kc-1", -1)  // it used nothing
	settle(keyBob, "ka-1", -1)    // granted before the tick: too late to refund
	wantKey(keyCarol, 0, 1, false)
	wantKey(keyHeidi, 3, 0, false)
	report(keyHeidi, "up-kc", interceptor.Upstream{Remaining: new(int64(1))})
	report(keyBob, "up-ka", interceptor.Upstream{Pause: time.Minute})
	wantKey(keyBob, 3, 0, true)
	var resp workflows.AcquireResponse
	r.updateWF(t, id, "keyed-batch", workflows.AcquireUpdate, workflows.AcquireBatch{Requests: []workflows.AcquireRequest{
		{ID: "ka-2", Cost: 1, Key: keyBob}, {ID: "kc-2", Cost: 1, Key: keyHeidi}}}, &resp)
	if res := resp.Results; len(res) != 2 || res[0].Granted || res[0].RetryAfter <= 0 || res[0].KeyTokens == nil || *res[0].KeyTokens != 3 ||
		!res[1].Granted || res[1].KeyTokens == nil || *res[1].KeyTokens != 0 {
		t.Fatalf("keyed batch: %+v; want bob's request denied while paused (3 tokens kept), heidi's granted (0 left)", resp)
	}
	// The fourth update: the run continues as new.
	testserver.Eventually(t, wait, func() (bool, string) {
		d, err := r.s.Client.DescribeWorkflowExecution(ctx, id, first)
		st := d.GetWorkflowExecutionInfo().GetStatus()
		return err == nil && st == enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW, fmt.Sprintf("first run %s (%v)", st, err)
	})
	second := r.currentRun(t, id)
	if second == first {
		t.Fatalf("run %s continued as new, but is still the current run", first)
	}
	before, after, err := operator.RefillKey(ctx, r.s.Client, spec.Name, keyCarol, operator.RefillOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if before.Tokens != 0 || before.Debt != 1 || after.Tokens != 1 || after.Debt != 0 {
		t.Fatalf("refill of carol: %+v → %+v; want 0 tokens and 1 owed → 1 token, debt paid", before, after)
	}
	r.settle(t, id, "")
	grant(keyCarol, "kb-3", 1, 0)
	if d := r.acquireKey(t, a, key(keyBob), "ka-1", 2); !d.Granted {
		t.Fatalf("acquire ka-1 again, granted in the first run: %+v; want granted, for free", d)
	}
	wantKey(keyBob, 3, 0, true)
	wantKey(keyCarol, 0, 0, false)
	wantKey(keyHeidi, 0, 0, false)
	st := r.wantState(t, spec.Name, 0, 8, 2)
	if st.Keys != 3 || st.Refunded != 1 || st.Unrefunded != 1 || st.Charged != 3 || st.Calibrations != 1 || st.Pauses != 1 {
		t.Fatalf("bucket %s: %+v, %d keys; want 3 keys, 1 refunded, 1 too late, 3 charged, 1 calibration, 1 pause", spec.Name, st.State, st.Keys)
	}
	r.save(t, keyedFirstFile, id, first)
	r.save(t, keyedSecondFile, id, second)
	r.save(t, keyedRefillFile, refillID, refillRun)
}

// authorizedTicks: the buckets here whose Schedules tick inside the
// recording, every 2 s and every 1 s. The real Schedule starts a refill
// workflow per tick, which signals the bucket and authorizes it to apply the
// ticks after it by itself: ahead of them, those within bucket.AuthorizeLead
// (the next one at 2 s, three at 1 s). A grant follows each tick. Then the
// Schedule is paused; once the refill of the last tick it started has
// arrived, the bucket applies the ticks that refill authorized by itself, on
// each tick (a grant draws on each), and no more.
func (r *recorder) authorizedTicks(file, name string, every time.Duration, ahead int) func(t *testing.T) {
	return func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
		defer cancel()
		spec := bucket.Spec{Name: name, Schedule: "@every " + every.String(), Amount: 1, Maximum: 1, Initial: new(int64(0))}
		r.sync(t, spec)
		id := workflows.BucketID(spec.Name)
		a := newAcquirer(t, r.s)
		h := r.s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(spec.Name))
		lead := time.Duration(ahead) * every
		var last, tick time.Time // the refill the latest grant drew on; the tick the Schedule was paused after
		grants := int64(0)
		for i := 1; tick.IsZero(); i++ {
			if i > 20 {
				t.Fatalf("after %d ticks, no refill arrived early enough to pause the Schedule before the next tick", i-1)
			}
			testserver.Eventually(t, wait, func() (bool, string) {
				st, err := r.s.State(ctx, spec.Name)
				return err == nil && st.Tokens == 1, fmt.Sprintf("bucket %s: %+v (%v); want the next tick's token", spec.Name, st.State, err)
			})
			reqID := fmt.Sprint("auth-", i)
			d := r.acquireKey(t, a, interceptor.Key{Bucket: spec.Name}, reqID, 1)
			if !d.Granted || d.Remaining != 0 || !d.LastRefill.After(last) {
				t.Fatalf("acquire %s: %+v; want granted, 0 tokens left, drawn on a refill after %v", reqID, d, last)
			}
			last = d.LastRefill
			grants++
			st, err := r.s.State(ctx, spec.Name)
			if err != nil {
				t.Fatal(err)
			}
			// The refill of the latest tick arrived and authorized those after
			// it: pause, and take the Schedule's last tick, whose refill may
			// still be on its way.
			if i >= 3 && st.Tokens == 0 && st.Until.Equal(st.LastTick.Add(lead)) {
				if err := h.Pause(ctx, client.SchedulePauseOptions{Note: "paused by the recorder"}); err != nil {
					t.Fatal(err)
				}
				desc, err := h.Describe(ctx)
				if err != nil {
					t.Fatal(err)
				}
				n := len(desc.Info.RecentActions)
				if !desc.Schedule.State.Paused || n == 0 {
					t.Fatalf("the Schedule after the pause: paused %t, recent actions %+v", desc.Schedule.State.Paused, desc.Info.RecentActions)
				}
				tick = desc.Info.RecentActions[n-1].ScheduleTime
				t.Logf("paused the Schedule after the tick of %v, %d ticks in", tick.Format(time.RFC3339Nano), i)
			}
		}
		testserver.Eventually(t, wait, func() (bool, string) {
			st, err := r.s.State(ctx, spec.Name)
			return err == nil && st.Until.Equal(tick.Add(lead)), fmt.Sprintf("bucket %s: %+v (%v); want the refill of %v, authorizing the ticks through %v", spec.Name, st.State, err, tick, tick.Add(lead))
		})
		next := tick
		for k := 1; k <= ahead; k++ {
			next = next.Add(every)
			<-time.After(time.Until(next.Add(every / 4))) // past the authorized tick
			reqID := fmt.Sprint("auth-self-", k)
			d := r.acquireKey(t, a, interceptor.Key{Bucket: spec.Name}, reqID, 1)
			if !d.Granted || d.Remaining != 0 || !d.LastRefill.Equal(next) {
				t.Fatalf("acquire %s: %+v; want granted from the tick of %v, which the bucket applied itself", reqID, d, next)
			}
			grants++
		}
		<-time.After(time.Until(next.Add(every + every/4))) // past the tick after, which nothing authorized
		desc, err := h.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(desc.Info.RecentActions); !desc.Schedule.State.Paused || n == 0 || desc.Info.RecentActions[n-1].ScheduleTime.After(tick) {
			t.Fatalf("the Schedule, paused after the tick of %v: paused %t, recent actions %+v", tick, desc.Schedule.State.Paused, desc.Info.RecentActions)
		}
		r.rateLimited(t, id, "auth-unauthorized", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: "auth-late", Cost: 1}}})
		st := r.wantState(t, spec.Name, 0, grants, 0)
		if !st.LastTick.Equal(next) || !st.Until.Equal(next) || st.Ignored != 0 {
			t.Fatalf("at the end: last tick %v, authorized until %v, %d ignored; want the tick of %v, no later one authorized", st.LastTick, st.Until, st.Ignored, next)
		}
		r.save(t, file, id, r.runID(t, spec.Name))
	}
}

// reconfigure: tb sync-schedules changes a running bucket twice through the
// configure update, which upserts the spec memo: a lowered maximum clamps
// the tokens, a raised one keeps them, and the new amount applies to the
// next refill.
func (r *recorder) reconfigure(t *testing.T) {
	spec := bucket.Spec{Name: "reconfigure", Schedule: "@yearly", Amount: 5, Maximum: 20, Initial: new(int64(15))}
	r.sync(t, spec)
	a := newAcquirer(t, r.s)
	r.grant(t, a, spec.Name, "reconfigure-1", 2, 13)
	lowered := bucket.Spec{Name: spec.Name, Schedule: "@yearly", Amount: 4, Maximum: 8}
	r.sync(t, lowered)
	r.wantState(t, spec.Name, 8, 2, 0)
	r.grant(t, a, spec.Name, "reconfigure-2", 1, 7)
	raised := bucket.Spec{Name: spec.Name, Schedule: "@monthly", Amount: 10, Maximum: 30}
	r.sync(t, raised)
	r.wantState(t, spec.Name, 7, 3, 0)
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: "manual-1"}) // the new amount, 10
	r.grant(t, a, spec.Name, "reconfigure-3", 1, 16)
	st := r.wantState(t, spec.Name, 16, 4, 0)
	if st.Spec.Maximum != 30 || st.Spec.Schedule != "@monthly" {
		t.Fatalf("spec %+v; want the raised one", st.Spec)
	}
	r.save(t, reconfigureFile, workflows.BucketID(spec.Name), r.runID(t, spec.Name))
}

// continueAsNew: a bucket continuing as new every 3 updates; its first run
// and the run it continued as, which sees the first run's refill and request
// IDs again.
func (r *recorder) continueAsNew(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	spec := bucket.Spec{Name: "continue_as_new", Schedule: "@yearly", Amount: 5, Maximum: 10, Initial: new(int64(2))}
	id := workflows.BucketID(spec.Name)
	run, err := r.s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: workflows.TaskQueue, Memo: map[string]any{workflows.SpecMemo: spec},
	}, workflows.BucketWorkflowType, workflows.BucketInput{Spec: spec, MaxUpdatesPerRun: 3})
	if err != nil {
		t.Fatal(err)
	}
	first := run.GetRunID()
	a := newAcquirer(t, r.s)
	tick := yearStart()
	r.grant(t, a, spec.Name, "can-1", 2, 0)
	r.signal(t, spec.Name, workflows.RefillSignal, tick)
	r.grant(t, a, spec.Name, "can-2", 1, 4)
	r.grant(t, a, spec.Name, "can-3", 3, 1) // the third update: the run continues as new
	testserver.Eventually(t, wait, func() (bool, string) {
		d, err := r.s.Client.DescribeWorkflowExecution(ctx, id, first)
		st := d.GetWorkflowExecutionInfo().GetStatus()
		return err == nil && st == enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW, fmt.Sprintf("first run %s (%v)", st, err)
	})
	second := r.runID(t, spec.Name)
	if second == first {
		t.Fatalf("run %s continued as new, but is still the current run", first)
	}
	r.signal(t, spec.Name, workflows.RefillSignal, tick) // applied in the first run: ignored
	r.grant(t, a, spec.Name, "can-1", 2, 1)              // granted in the first run: free
	r.grant(t, a, spec.Name, "can-4", 1, 0)
	st := r.wantState(t, spec.Name, 0, 7, 0)
	if st.Run != 1 {
		t.Fatalf("run %d; want 1", st.Run)
	}
	r.save(t, firstRunFile, id, first)
	r.save(t, continuedRunFile, id, second)
}

// retire: a grant, then the retire update ends the run; a refill started by
// the Schedule then finds the bucket retired and fails.
func (r *recorder) retire(t *testing.T) {
	spec := bucket.Spec{Name: "retired", Schedule: "@yearly", Amount: 5, Maximum: 5}
	r.sync(t, spec)
	id := workflows.BucketID(spec.Name)
	runID := r.runID(t, spec.Name)
	r.grant(t, newAcquirer(t, r.s), spec.Name, "retire-1", 1, 4)
	var st workflows.Status
	r.update(t, spec.Name, "retire", workflows.RetireUpdate, nil, &st)
	if st.Tokens != 4 || st.Granted != 1 {
		t.Fatalf("retired with %+v; want 4 tokens, 1 granted", st)
	}
	r.waitClosed(t, id, runID, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED)
	r.save(t, retireFile, id, runID)

	refillID, refillRun := r.triggerRefill(t, spec.Name, enumspb.WORKFLOW_EXECUTION_STATUS_FAILED)
	r.save(t, retiredFile, refillID, refillRun)
}

// refillFromSchedule: the Schedule starts a refill workflow, which sets the
// TemporalScheduledStartTime search attribute the refill takes its tick from.
func (r *recorder) refillFromSchedule(t *testing.T) {
	spec := bucket.Spec{Name: "scheduled", Schedule: "@yearly", Amount: 3, Maximum: 10, Initial: new(int64(0))}
	r.sync(t, spec)
	id, runID := r.triggerRefill(t, spec.Name, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED)
	r.settle(t, workflows.BucketID(spec.Name), "")
	if st := r.wantState(t, spec.Name, 3, 0, 0); st.LastTick.IsZero() {
		t.Fatalf("the refill carried no tick: %+v", st)
	}
	r.save(t, scheduledFile, id, runID)
}

// refillMissingBucket: the bucket workflow is gone (terminated); the next
// refill the Schedule starts finds it missing, starts it as a child, and
// signals it. The bucket it started is recorded too, after a grant.
func (r *recorder) refillMissingBucket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	spec := bucket.Spec{Name: "missing", Schedule: "@yearly", Amount: 3, Maximum: 10, Initial: new(int64(4))}
	r.sync(t, spec)
	id := workflows.BucketID(spec.Name)
	gone := r.runID(t, spec.Name)
	if err := r.s.Client.TerminateWorkflow(ctx, id, gone, "the bucket workflow went missing"); err != nil {
		t.Fatal(err)
	}
	refillID, refillRun := r.triggerRefill(t, spec.Name, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED)
	healed := r.runID(t, spec.Name)
	if healed == gone {
		t.Fatalf("the refill did not start bucket %s again", id)
	}
	r.settle(t, id, healed)
	r.wantState(t, spec.Name, 7, 0, 0) // a new bucket holds its initial 4, plus the refill of 3
	r.grant(t, newAcquirer(t, r.s), spec.Name, "missing-1", 1, 6)
	r.save(t, missingFile, refillID, refillRun)
	r.save(t, healedFile, id, healed)
}

func newAcquirer(t *testing.T, s *testserver.Server) *interceptor.Acquirer {
	t.Helper()
	a, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// close closes the Acquirer, which reports the denials it has not
// reported to workflow wf, and waits until wf has taken them.
func (r *recorder) close(t *testing.T, a *interceptor.Acquirer, wf string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r.settle(t, wf, "")
}

// acquireKey acquires through the Acquirer and returns what it decided.
func (r *recorder) acquireKey(t *testing.T, a *interceptor.Acquirer, k interceptor.Key, id string, cost int64) interceptor.Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	d, err := a.AcquireKey(ctx, k, id, cost)
	if err != nil {
		t.Fatalf("acquire %s: %v", id, err)
	}
	return d
}

// rateLimited sends one acquire update to workflow wf and wants its
// validator to refuse it, writing no history; it returns the answer the
// refusal carries.
func (r *recorder) rateLimited(t *testing.T, wf, updateID string, batch workflows.AcquireBatch) workflows.AcquireResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	h, err := r.s.Client.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		UpdateID:     updateID,
		WorkflowID:   wf,
		UpdateName:   workflows.AcquireUpdate,
		Args:         []any{batch},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = h.Get(ctx, nil)
	}
	var appErr *temporal.ApplicationError
	var resp workflows.AcquireResponse
	if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrRateLimited || appErr.Details(&resp) != nil {
		t.Fatalf("update %s: %v; want it refused as %s", updateID, err, workflows.ErrRateLimited)
	}
	return resp
}

// sync creates or reconfigures the bucket as tb sync-schedules does.
func (r *recorder) sync(t *testing.T, spec bucket.Spec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	changes, err := operator.Apply(ctx, r.s.Client, &bucket.Config{Buckets: []bucket.Spec{spec}}, operator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range changes {
		if ch.Bucket == spec.Name && ch.Workflow != operator.Created && ch.Workflow != operator.Updated {
			t.Fatalf("sync left bucket %s %s; want it created or updated", spec.Name, ch.Workflow)
		}
	}
	if n := spec.ShardCount(); n > 0 {
		for i := range n {
			r.settle(t, workflows.ShardID(spec.Name, i), "")
		}
		return
	}
	r.settle(t, workflows.BucketID(spec.Name), "")
}

// grant acquires through the Acquirer and wants the tokens granted, leaving tokens.
func (r *recorder) grant(t *testing.T, a *interceptor.Acquirer, name, id string, cost, tokens int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	d, err := a.Acquire(ctx, name, id, cost)
	if err != nil {
		t.Fatalf("acquire %s: %v", id, err)
	}
	if !d.Granted || d.Remaining != tokens {
		t.Fatalf("acquire %s of %d: %+v; want granted, %d tokens left", id, cost, d, tokens)
	}
}

// deny acquires through the Acquirer and wants it turned away by the validator.
func (r *recorder) deny(t *testing.T, a *interceptor.Acquirer, name, id string, cost int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	d, err := a.Acquire(ctx, name, id, cost)
	if err != nil {
		t.Fatalf("acquire %s: %v", id, err)
	}
	if d.Granted || d.RetryAfter <= 0 {
		t.Fatalf("acquire %s of %d: %+v; want it denied, with a retry-after", id, cost, d)
	}
}

// acquireBatch sends one acquire update, with a fixed update ID.
func (r *recorder) acquireBatch(t *testing.T, name, updateID string, batch workflows.AcquireBatch) workflows.AcquireResponse {
	t.Helper()
	var resp workflows.AcquireResponse
	r.update(t, name, updateID, workflows.AcquireUpdate, batch, &resp)
	return resp
}

func (r *recorder) update(t *testing.T, name, updateID, update string, arg, out any) {
	t.Helper()
	r.updateWF(t, workflows.BucketID(name), updateID, update, arg, out)
}

// updateWF sends an update to workflow wf (a bucket's, or a shard's), with a fixed update ID.
func (r *recorder) updateWF(t *testing.T, wf, updateID, update string, arg, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	opts := client.UpdateWorkflowOptions{
		UpdateID:     updateID,
		WorkflowID:   wf,
		UpdateName:   update,
		WaitForStage: client.WorkflowUpdateStageCompleted,
	}
	if arg != nil {
		opts.Args = []any{arg}
	}
	h, err := r.s.Client.UpdateWorkflow(ctx, opts)
	if err == nil {
		err = h.Get(ctx, out)
	}
	if err != nil {
		t.Fatalf("update %s %s: %v", update, updateID, err)
	}
}

// signal signals the bucket and waits until it has handled the signal.
func (r *recorder) signal(t *testing.T, name, signal string, arg any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := r.s.Client.SignalWorkflow(ctx, workflows.BucketID(name), "", signal, arg); err != nil {
		t.Fatalf("signal %s %+v: %v", signal, arg, err)
	}
	r.settle(t, workflows.BucketID(name), "")
}

// settle waits until the run has no workflow task pending: everything sent
// to it so far is in its history, decided.
func (r *recorder) settle(t *testing.T, id, runID string) {
	t.Helper()
	testserver.Eventually(t, wait, func() (bool, string) {
		d, err := r.s.Client.DescribeWorkflowExecution(context.Background(), id, runID)
		if err != nil {
			return false, fmt.Sprintf("describing %s: %v", id, err)
		}
		if st := d.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
			return true, ""
		}
		return d.GetPendingWorkflowTask() == nil, fmt.Sprintf("%s has a workflow task pending", id)
	})
}

func (r *recorder) waitClosed(t *testing.T, id, runID string, want enumspb.WorkflowExecutionStatus) {
	t.Helper()
	var st enumspb.WorkflowExecutionStatus
	testserver.Eventually(t, wait, func() (bool, string) {
		d, err := r.s.Client.DescribeWorkflowExecution(context.Background(), id, runID)
		st = d.GetWorkflowExecutionInfo().GetStatus()
		return err == nil && st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, fmt.Sprintf("%s is %s (%v)", id, st, err)
	})
	if st != want {
		t.Fatalf("%s ended %s; want %s", id, st, want)
	}
}

// runID returns the current run of the bucket workflow.
func (r *recorder) runID(t *testing.T, name string) string {
	t.Helper()
	return r.currentRun(t, workflows.BucketID(name))
}

// currentRun returns the current run of workflow id.
func (r *recorder) currentRun(t *testing.T, id string) string {
	t.Helper()
	d, err := r.s.Client.DescribeWorkflowExecution(context.Background(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	return d.GetWorkflowExecutionInfo().GetExecution().GetRunId()
}

// wantState queries the bucket and wants its tokens and counts.
func (r *recorder) wantState(t *testing.T, name string, tokens, granted, denied int64) workflows.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := r.s.State(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if st.Tokens != tokens || st.Granted != granted || st.Denied != denied {
		t.Fatalf("bucket %s: %d tokens, %d granted, %d denied; want %d, %d, %d", name, st.Tokens, st.Granted, st.Denied, tokens, granted, denied)
	}
	return st
}

// triggerRefill has the bucket's Schedule start a refill workflow now, and
// waits for it to end with the status wanted.
func (r *recorder) triggerRefill(t *testing.T, name string, want enumspb.WorkflowExecutionStatus) (id, runID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	h := r.s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(name))
	desc, err := h.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := len(desc.Info.RecentActions)
	if err := h.Trigger(ctx, client.ScheduleTriggerOptions{Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL}); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, wait, func() (bool, string) {
		desc, err := h.Describe(ctx)
		if err != nil || len(desc.Info.RecentActions) <= before {
			return false, fmt.Sprintf("Schedule %s started no refill (%v)", workflows.ScheduleID(name), err)
		}
		started := desc.Info.RecentActions[len(desc.Info.RecentActions)-1].StartWorkflowResult
		id, runID = started.WorkflowID, started.FirstExecutionRunID
		return true, ""
	})
	r.waitClosed(t, id, runID, want)
	return id, runID
}

// save writes the run's whole history as JSON, the format of
// `temporal workflow show --output json`, and checks that the SDK reads it back.
func (r *recorder) save(t *testing.T, name, id, runID string) {
	t.Helper()
	r.settle(t, id, runID)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	hist := &historypb.History{}
	it := r.s.Client.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatalf("history of %s: %v", id, err)
		}
		hist.Events = append(hist.Events, e)
	}
	data, err := protojson.Marshal(hist)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, data, "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	back, err := client.HistoryFromJSON(bytes.NewReader(out.Bytes()), client.HistoryJSONOptions{})
	if err != nil {
		t.Fatalf("the SDK cannot read the history of %s back: %v", id, err)
	}
	if !proto.Equal(back, hist) {
		t.Fatalf("the history of %s reads back different", id)
	}
	path := filepath.Join(r.dir, name+r.suffix+".json")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(out.Bytes()); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d events (workflow %s, run %s)", path, len(hist.Events), id, runID)
}

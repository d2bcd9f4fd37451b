package workflows

import (
	"encoding/json"
	"time"

	"github.com/tokenbucket/tb/bucket"
)

// BucketInput starts a bucket workflow, and carries its whole state across
// continue-as-new. tb sync-schedules starts a bucket with the Spec alone.
type BucketInput struct {
	Spec bucket.Spec `json:"spec"`
	// State is nil for a new bucket, which starts with Spec's initial tokens.
	State *bucket.State `json:"state,omitempty"`
	// MaxUpdatesPerRun continues the bucket as new after that many accepted
	// updates (default DefaultMaxUpdatesPerRun); Temporal refuses more than 2000.
	MaxUpdatesPerRun int `json:"maxUpdatesPerRun,omitempty"`
	// Shard is, for a keyed bucket, which of its Spec.ShardCount() shards
	// this workflow is: it holds the keys bucket.KeyShard puts there.
	Shard int `json:"shard,omitempty"`

	// keys are a keyed bucket's keys (at most MaxKeysPerShard).
	keys map[string]bucket.KeyState

	// What a run hands the next: the IDs of recently granted requests and of
	// recently applied refills, so a retry is applied once even across runs,
	// and the number of runs before this one.
	granted, ticks, settled recent
	run                     int
}

// bucketInputJSON is BucketInput as it travels: every field, exported.
type bucketInputJSON struct {
	Spec             bucket.Spec                `json:"spec"`
	State            *bucket.State              `json:"state,omitempty"`
	Granted          recent                     `json:"granted,omitzero"`
	Ticks            recent                     `json:"ticks,omitzero"`
	Settled          recent                     `json:"settled,omitzero"`
	Run              int                        `json:"run,omitempty"`
	MaxUpdatesPerRun int                        `json:"maxUpdatesPerRun,omitempty"`
	Shard            int                        `json:"shard,omitempty"`
	Keys             map[string]bucket.KeyState `json:"keys,omitempty"`
}

// MarshalJSON encodes the input with what the bucket carries.
func (in BucketInput) MarshalJSON() ([]byte, error) {
	return json.Marshal(bucketInputJSON{Spec: in.Spec, State: in.State, Granted: in.granted, Ticks: in.ticks, Settled: in.settled, Run: in.run, MaxUpdatesPerRun: in.MaxUpdatesPerRun, Shard: in.Shard, Keys: in.keys})
}

// UnmarshalJSON decodes an input MarshalJSON encoded.
func (in *BucketInput) UnmarshalJSON(b []byte) error {
	var w bucketInputJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*in = BucketInput{Spec: w.Spec, State: w.State, MaxUpdatesPerRun: w.MaxUpdatesPerRun, granted: w.Granted, ticks: w.Ticks, settled: w.Settled, run: w.Run, Shard: w.Shard, keys: w.Keys}
	return nil
}

// DefaultMaxUpdatesPerRun keeps a run well below Temporal's 2000 accepted updates.
const DefaultMaxUpdatesPerRun = 1000

// MaxBatch is the largest number of requests one acquire update may carry.
const MaxBatch = 5000

// MaxIDLength bounds request, lease and refill IDs, in bytes. The bucket
// remembers recent IDs across continue-as-new, so their size is part of the
// payload it carries: a longer request ID is refused as invalid, a refill
// with a longer ID is ignored.
const MaxIDLength = 64

// AcquireRequest asks for Cost tokens. ID identifies the request so that a
// retry is granted at most once; it must be unique per logical request and
// at most MaxIDLength bytes long.
type AcquireRequest struct {
	ID   string `json:"id"`
	Cost int64  `json:"cost"`
	// Key names the key of a keyed bucket the tokens come from; "" for a
	// bucket that is not keyed.
	Key string `json:"key,omitempty"`
	// Optional asks for a lease: tokens the sender hands out itself until the
	// next tick, granted only when the bucket is rich, never counted as denied.
	// At most one optional request of a batch is lent.
	Optional bool `json:"optional,omitempty"`
}

// AcquireBatch is the argument of the acquire update: requests granted in order.
type AcquireBatch struct {
	Requests []AcquireRequest `json:"requests"`
	// Rejected reports tokens the sender saw turned away by the update
	// validator since its last accepted batch. A validator cannot change
	// workflow state, so those denials are counted when they are reported
	// here. A negative count makes the batch invalid.
	Rejected int64 `json:"rejected,omitempty"`
	// Process identifies the sender (one ID per Acquirer, at most
	// MaxIDLength bytes), so the bucket can tell how many processes ask it
	// (AcquireResponse.Processes). Optional.
	Process string `json:"process,omitempty"`
}

// Outcome is the answer to one request.
type Outcome struct {
	Granted bool `json:"granted,omitempty"`
	// RetryAfter is, when not granted, how long until the bucket is expected
	// to hold this request's tokens, counting the requests ahead of it.
	RetryAfter time.Duration `json:"retryAfter,omitempty"`
	// Invalid says why the request can never be granted.
	Invalid string `json:"invalid,omitempty"`
	// Shadow: granted only because the bucket is in shadow mode; enforcing,
	// it would have been refused.
	Shadow bool `json:"shadow,omitempty"`
	// KeyTokens is, in a keyed bucket, the tokens the request's key held
	// once the request was handled (the response's Tokens are the shard's).
	KeyTokens *int64 `json:"keyTokens,omitempty"`
}

// AcquireResponse answers an acquire update, and is the detail of the
// RateLimited error its validator refuses a batch with (interceptor.AsDenial reads it).
type AcquireResponse struct {
	// Bucket is set in the detail of a RateLimited error: the bucket that refused.
	Bucket string `json:"bucket,omitempty"`
	// Results, one per request, in order.
	Results []Outcome `json:"results"`
	// Tokens left in the bucket.
	Tokens int64 `json:"tokens"`
	// NextRefill is when the next refill is expected.
	NextRefill time.Time `json:"nextRefill,omitzero"`
	// LastRefill is when the bucket applied its latest refill before deciding:
	// grants with the same LastRefill drew on the same refill.
	LastRefill time.Time `json:"lastRefill,omitzero"`
	// NextTick is the nominal time of the next scheduled refill: a lease ends then.
	NextTick time.Time `json:"nextTick,omitzero"`
	// LeaseFor is set when the batch's lease was lent: how long after the
	// bucket's decision its window lasts. The borrower counts it from before
	// it sent the update, on its own monotonic clock, so a clock that
	// disagrees with the server's never stretches a lease into the next window.
	LeaseFor time.Duration `json:"leaseFor,omitempty"`
	// Processes is how many processes sent this bucket batches within
	// ProcessWindow, at most MaxProcessesSeen (see AcquireBatch.Process): in
	// an accepted answer, those whose batches were accepted (what a replay
	// of the run gives again); in a refusal, those whose batches were
	// refused too. A hint by which a fleet's Acquirers spread their updates
	// after an idle spell. A bucket continuing as new counts again from zero.
	Processes int `json:"processes,omitempty"`
}

// Settle is the settle signal: a grant's tokens given back (Tokens < 0: the
// activity did not run, or used fewer), or more charged (Tokens > 0: it used
// more than it was granted). ID names the settle-up, which is applied once;
// Grant is the request ID of the grant. A refund is applied only while the
// window the grant was made in lasts (a refill since has restored the bucket
// already), and never more than the grant's cost; a charge takes what the
// bucket holds and leaves the rest as a debt the next refills pay.
type Settle struct {
	ID     string `json:"id"`
	Grant  string `json:"grant"`
	Tokens int64  `json:"tokens"`
	// Key is the key of a keyed bucket the grant was made from.
	Key string `json:"key,omitempty"`
}

// Upstream is the upstream signal: what the API behind the bucket said about
// its quota. PauseFor (a 429's Retry-After) makes the bucket grant nothing for
// that long from when it takes the signal; Remaining lowers its tokens to at
// most that many. ID names the report, which is applied once.
type Upstream struct {
	ID        string        `json:"id"`
	PauseFor  time.Duration `json:"pauseFor,omitempty"`
	Remaining *int64        `json:"remaining,omitempty"`
	// Key is the key of a keyed bucket the upstream spoke of: it alone pauses.
	Key string `json:"key,omitempty"`
}

// Report is the report signal: tokens an acquirer saw refused by the acquire
// validator and could not report in an accepted batch (see
// AcquireBatch.Rejected). The bucket adds them to its Denied count.
type Report struct {
	Rejected int64 `json:"rejected"`
}

// Return is the return signal: the unused tokens of lease ID, given back
// before the lease ends. The bucket takes them back once, and only within
// the window they were lent in; a later return is ignored.
type Return struct {
	ID     string `json:"id"`
	Tokens int64  `json:"tokens"`
}

// Refill is the refill signal.
type Refill struct {
	// ID makes the signal idempotent: a refill whose ID was seen recently is ignored.
	ID string `json:"id"`
	// Tick is the nominal time of a scheduled refill; zero for a manual one.
	Tick time.Time `json:"tick,omitzero"`
	// Amount of tokens to add; 0 means the bucket's amount.
	Amount int64 `json:"amount,omitempty"`
	// Key, for a manual refill of a keyed bucket, is the key to top up.
	Key string `json:"key,omitempty"`
}

// RefillInput is the argument a refill Schedule passes to each refill
// workflow: the bucket's whole spec, so a missing bucket can be started, and
// so tb sync-schedules can compare a Schedule against buckets.yaml.
type RefillInput struct {
	Spec bucket.Spec `json:"spec"`
}

// Status answers the state query.
type Status struct {
	Spec bucket.Spec `json:"spec"`
	bucket.State
	// NextRefill is when the next refill is expected.
	NextRefill time.Time `json:"nextRefill,omitzero"`
	// Run counts the continue-as-new runs before the current one.
	Run int `json:"run"`
	// Updates accepted in the current run.
	Updates int `json:"updates"`
	// Keys is, for a shard of a keyed bucket, how many keys it holds, and
	// Emptiest the keys with the fewest tokens.
	Keys     int         `json:"keys,omitempty"`
	Emptiest []KeyStatus `json:"emptiest,omitempty"`
}

// KeyStatus answers the key query: one key of a keyed bucket.
type KeyStatus struct {
	Key string `json:"key"`
	// Held is false for a key the shard does not hold: it is at its starting level.
	Held        bool      `json:"held"`
	Tokens      int64     `json:"tokens"`
	Debt        int64     `json:"debt,omitempty"`
	PausedUntil time.Time `json:"pausedUntil,omitzero"`
	Used        time.Time `json:"used,omitzero"`
	NextRefill  time.Time `json:"nextRefill,omitzero"`
}

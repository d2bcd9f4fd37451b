// Package workflows holds the bucket and refill workflows, the names and
// payloads they answer to, and Register, which puts both on a worker.
package workflows

import (
	"strconv"

	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
)

// Names of everything tb puts on a Temporal namespace.
const (
	// TaskQueue is where bucket and refill workflows run unless told otherwise.
	TaskQueue = "tb"

	BucketWorkflowType = "TokenBucket"
	RefillWorkflowType = "TokenBucketRefill"

	// BucketIDPrefix + bucket name is the ID of a bucket workflow.
	BucketIDPrefix = "tb-bucket-"
	// ScheduleIDPrefix + bucket name is the ID of its refill Schedule, and the
	// prefix of the refill workflows that Schedule starts.
	ScheduleIDPrefix = "tb-refill-"

	AcquireUpdate   = "acquire"
	ConfigureUpdate = "configure"
	RetireUpdate    = "retire"
	RefillSignal    = "refill"
	ReturnSignal    = "return"
	ReportSignal    = "report"
	SettleSignal    = "settle"
	UpstreamSignal  = "upstream"
	StateQuery      = "state"
	// KeyQuery answers one key of a keyed bucket's shard: its argument is the key.
	KeyQuery = "key"

	// SpecMemo is the memo field holding a bucket workflow's current spec,
	// readable without a worker.
	SpecMemo = "tbSpec"
	// OwnerMemo marks the Schedules tb created (value Owner); tb sync-schedules
	// deletes no other.
	OwnerMemo = "tbOwner"
	Owner     = "tb"
)

// Metrics the bucket workflow records through its workflow's metrics handler
// (which records nothing during replay), each tagged MetricTagBucket.
const (
	MetricTagBucket = "bucket"
	// MetricTokens (gauge): tokens the bucket holds, after each change.
	MetricTokens = "tb_bucket_tokens"
	// MetricDebt (gauge): tokens charged beyond what the bucket held, not yet paid.
	MetricDebt = "tb_bucket_debt"
	// MetricRefills (counter): refills applied, scheduled, manual and the
	// ticks the bucket applied by itself.
	MetricRefills = "tb_bucket_refills"
	// MetricRefillLag (timer): how long after its tick a scheduled refill
	// was applied: when its signal arrived, or 0 for a tick an earlier
	// refill authorized, which the bucket applies as of the tick itself.
	MetricRefillLag = "tb_bucket_refill_lag"
	// MetricRefunded and MetricCharged (counters): tokens given back and charged by settle-ups.
	MetricRefunded = "tb_bucket_refunded_tokens"
	MetricCharged  = "tb_bucket_charged_tokens"
	// MetricPaused (gauge): 1 while a pause the upstream asked for lasts, else 0.
	MetricPaused = "tb_bucket_paused"
	// MetricPauses and MetricCalibrations (counters): pauses begun, and
	// times the upstream's count lowered the tokens.
	MetricPauses       = "tb_bucket_pauses"
	MetricCalibrations = "tb_bucket_calibrations"
	// MetricKeys (gauge): keys a shard of a keyed bucket holds, tagged with
	// the bucket and MetricTagShard (never one series per key): their sum by
	// bucket is the keys the bucket holds.
	MetricKeys = "tb_bucket_keys"
	// MetricTagShard is the shard of a keyed bucket, "0" to "63".
	MetricTagShard = "shard"
	// MetricWouldDeny (counter): in shadow mode, tokens let through that
	// enforcing would have refused.
	MetricWouldDeny = "tb_bucket_would_deny_tokens"
)

// Types of the ApplicationErrors tb returns; test for them with temporal.ApplicationError.Type.
const (
	// ErrRateLimited: the bucket holds too few tokens. Retryable; details hold an AcquireResponse.
	ErrRateLimited = "RateLimited"
	// ErrInvalidRequest: a request the bucket can never grant (bad cost, no ID). Not retryable.
	ErrInvalidRequest = "InvalidRequest"
	// ErrUnknownBucket: no bucket workflow by that name is running.
	ErrUnknownBucket = "UnknownBucket"
	// ErrInvalidSpec: a configure request with an invalid spec. Not retryable.
	ErrInvalidSpec = "InvalidSpec"
)

// BucketID returns the workflow ID of the named bucket.
func BucketID(name string) string { return BucketIDPrefix + name }

// ShardID returns the workflow ID of shard i of the named keyed bucket. A
// bucket name holds no '-', so no bucket's ID is another's shard's.
func ShardID(name string, i int) string { return BucketID(name) + "-" + strconv.Itoa(i) }

// KeyWorkflowID returns the workflow ID of the shard holding key of the named
// keyed bucket with shards shards.
func KeyWorkflowID(name, key string, shards int) string {
	return ShardID(name, bucket.KeyShard(key, shards))
}

// ScheduleID returns the ID of the named bucket's refill Schedule.
func ScheduleID(name string) string { return ScheduleIDPrefix + name }

// Register puts the bucket and refill workflows on a worker, which should
// poll TaskQueue (or the queue the Schedules were created with).
func Register(r worker.WorkflowRegistry) {
	r.RegisterWorkflowWithOptions(BucketWorkflow, workflow.RegisterOptions{Name: BucketWorkflowType})
	r.RegisterWorkflowWithOptions(RefillWorkflow, workflow.RegisterOptions{Name: RefillWorkflowType})
}

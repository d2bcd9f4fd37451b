package interceptor

import (
	"context"
	"errors"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/workflows"
)

// Metrics the interceptor and the Acquirer record, through the SDK's
// client.MetricsHandler: the interceptor through the running activity's
// (activity.GetMetricsHandler, which the SDK tags with the namespace, task
// queue, workflow and activity types), an Acquirer through
// AcquirerOptions.MetricsHandler. Each is tagged with the bucket
// (workflows.MetricTagBucket), never with a request. The bucket workflow's
// own metrics are the Metric* constants of package workflows.
const (
	// MetricAcquireRequests (counter): requests for a bucket's tokens,
	// tagged MetricTagResult. An activity drawing from several buckets makes
	// one request per bucket; a denial waited out inside the activity is
	// followed by another request.
	MetricAcquireRequests = "tb_acquire_requests"
	// MetricAcquireGrantedTokens (counter): tokens granted.
	MetricAcquireGrantedTokens = "tb_acquire_granted_tokens"
	// MetricAcquireLatency (timer): how long each request took to answer,
	// one sample per request, whatever its result.
	MetricAcquireLatency = "tb_acquire_latency"
	// MetricRetryDelay (timer): the NextRetryDelay of each RateLimited
	// error a denied activity fails with, tagged with the bucket of the
	// longest wait.
	MetricRetryDelay = "tb_retry_delay"
	// MetricActivityWait (timer): denials waited out inside the activity
	// (shorter than Options.MaxWait), each wait that ran to its end.
	MetricActivityWait = "tb_activity_wait"
	// MetricAcquireUpdates (counter): acquire Updates an Acquirer sent, one
	// per batch (a resend under the same Update ID is not counted again).
	// Temporal Cloud bills each Update as an Action.
	MetricAcquireUpdates = "tb_acquire_updates"
	// MetricAcquireUpdateRequests (counter): callers' requests those Updates
	// carried. Divided by MetricAcquireUpdates, the requests per Update:
	// what batching saves.
	MetricAcquireUpdateRequests = "tb_acquire_update_requests"

	// MetricTagResult is the tag of MetricAcquireRequests, one of the Result* values.
	MetricTagResult = "result"
	// ResultGranted: the tokens were taken.
	ResultGranted = "granted"
	// ResultDenied: the bucket held too few tokens.
	ResultDenied = "denied"
	// ResultError: the request could not be decided (bad input, an unknown
	// bucket, Temporal unreachable, a timeout); the activity did not run.
	ResultError = "error"
	// ResultShadow: granted only because the bucket is in shadow mode
	// (mode: shadow); enforcing, it would have refused. Its tokens are not
	// counted in MetricAcquireGrantedTokens, as the bucket does not count them
	// as granted.
	ResultShadow = "shadow"
)

// activityMetrics records what the interceptor does for one guarded
// activity, through the activity's metrics handler.
type activityMetrics struct{ h client.MetricsHandler }

func metricsFor(ctx context.Context) activityMetrics {
	h := activity.GetMetricsHandler(ctx)
	if h == nil {
		h = client.MetricsNopHandler
	}
	return activityMetrics{h}
}

func (m activityMetrics) bucket(name string) client.MetricsHandler {
	return m.h.WithTags(map[string]string{workflows.MetricTagBucket: name})
}

// acquire asks for the tokens, recording the request's result, the
// tokens granted and how long the answer took.
func (m activityMetrics) acquire(bucketName string, cost int64, acquire func() (Decision, error)) (Decision, error) {
	start := time.Now()
	d, err := acquire()
	h := m.bucket(bucketName)
	h.Timer(MetricAcquireLatency).Record(time.Since(start))
	result := ResultGranted
	switch {
	case err != nil:
		result = ResultError
	case !d.Granted:
		result = ResultDenied
	case d.Shadow:
		result = ResultShadow
	default:
		h.Counter(MetricAcquireGrantedTokens).Inc(cost)
	}
	h.WithTags(map[string]string{MetricTagResult: result}).Counter(MetricAcquireRequests).Inc(1)
	return d, err
}

// wait runs wait, which waits out a denial of the named bucket inside the
// activity and reports whether it did, and records the wait if it did.
func (m activityMetrics) wait(bucketName string, wait func() bool) bool {
	start := time.Now()
	if !wait() {
		return false
	}
	m.bucket(bucketName).Timer(MetricActivityWait).Record(time.Since(start))
	return true
}

// denied records the NextRetryDelay of err, the RateLimited error a denied
// activity fails with, and returns err.
func (m activityMetrics) denied(err error) error {
	var appErr *temporal.ApplicationError
	if d, ok := AsDenial(err); ok && errors.As(err, &appErr) {
		m.bucket(d.Bucket).Timer(MetricRetryDelay).Record(appErr.NextRetryDelay())
	}
	return err
}

// The tags the SDK gives an activity's metrics handler beyond its client's
// (go.temporal.io/sdk/internal/common/metrics), and the value the client's
// own handler gives them.
var activityTags = map[string]string{
	"task_queue":    "none",
	"workflow_type": "none",
	"activity_type": "none",
	"worker_type":   "none",
}

// acquirerOptions returns the options of the Acquirer made for the worker's
// client. The SDK gives an activity no way to reach its client's metrics
// handler, so unless the options name one, the Acquirer records through the
// activity's, with the activity's own tags set back to the client's values:
// one Acquirer carries the requests of every activity type in the process.
func (i *Interceptor) acquirerOptions(ctx context.Context) AcquirerOptions {
	opts := i.opts.AcquirerOptions
	if opts.Namespace == "" {
		opts.Namespace = activity.GetInfo(ctx).WorkflowNamespace
	}
	if opts.MetricsHandler == nil {
		opts.MetricsHandler = metricsFor(ctx).h.WithTags(activityTags)
	}
	return opts
}

// acquirerMetrics records the Updates an Acquirer sends.
type acquirerMetrics struct{ h client.MetricsHandler }

func newAcquirerMetrics(h client.MetricsHandler) acquirerMetrics {
	if h == nil {
		h = client.MetricsNopHandler
	}
	return acquirerMetrics{h}
}

// update records an acquire Update sent to the named bucket, carrying requests callers' requests.
func (m acquirerMetrics) update(bucketName string, requests int) {
	h := m.h.WithTags(map[string]string{workflows.MetricTagBucket: bucketName})
	h.Counter(MetricAcquireUpdates).Inc(1)
	h.Counter(MetricAcquireUpdateRequests).Inc(int64(requests))
}

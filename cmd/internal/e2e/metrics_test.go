package e2e_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// memoryMetrics is a client.MetricsHandler keeping every value recorded through it.
type memoryMetrics struct {
	store *metricSamples
	tags  map[string]string
}

type metricSamples struct {
	mu  sync.Mutex
	all []metricSample
}

type metricSample struct {
	name  string
	tags  map[string]string
	value float64
}

func newMemoryMetrics() memoryMetrics {
	return memoryMetrics{store: &metricSamples{}, tags: map[string]string{}}
}

func (m memoryMetrics) WithTags(tags map[string]string) client.MetricsHandler {
	merged := maps.Clone(m.tags)
	maps.Copy(merged, tags)
	return memoryMetrics{store: m.store, tags: merged}
}

func (m memoryMetrics) record(name string) metricFunc {
	return func(v float64) {
		m.store.mu.Lock()
		defer m.store.mu.Unlock()
		m.store.all = append(m.store.all, metricSample{name, m.tags, v})
	}
}

func (m memoryMetrics) Counter(name string) client.MetricsCounter { return m.record(name) }
func (m memoryMetrics) Gauge(name string) client.MetricsGauge     { return m.record(name) }
func (m memoryMetrics) Timer(name string) client.MetricsTimer     { return m.record(name) }

type metricFunc func(float64)

func (f metricFunc) Inc(d int64)            { f(float64(d)) }
func (f metricFunc) Update(v float64)       { f(v) }
func (f metricFunc) Record(d time.Duration) { f(d.Seconds()) }

func (m memoryMetrics) samples() []metricSample {
	m.store.mu.Lock()
	defer m.store.mu.Unlock()
	return append([]metricSample(nil), m.store.all...)
}

// total sums the samples of name whose tags include want (a counter's
// value), and counts them (a timer's samples).
func (m memoryMetrics) total(name string, want map[string]string) (sum float64, n int) {
	for _, s := range m.samples() {
		match := s.name == name
		for k, v := range want {
			match = match && s.tags[k] == v
		}
		if match {
			sum += s.value
			n++
		}
	}
	return sum, n
}

// Metered is the guarded activity of TestInterceptorMetricsMatchTheBucket.
func Metered(context.Context) error { return nil }

func CallMetered(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		ScheduleToCloseTimeout: 5 * time.Minute,
		StartToCloseTimeout:    30 * time.Second,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 0},
	})
	return workflow.ExecuteActivity(ctx, Metered).Get(ctx, nil)
}

// TestInterceptorMetricsMatchTheBucket runs a backlog through the interceptor
// on a client whose MetricsHandler keeps everything in memory: the requests
// it counts granted and denied are the tokens the bucket counted, every
// request has one latency sample, every denial was either waited out in the
// activity or handed back as a retry delay, and every tb metric is tagged
// with the bucket and nothing finer.
func TestInterceptorMetricsMatchTheBucket(t *testing.T) {
	const (
		name  = "metered"
		queue = "metered-app"
		jobs  = 24
	)
	s := testserver.NewServer(t)
	s.Sync(t, bucket.Spec{Name: name, Schedule: "@every 1s", Amount: 4, Maximum: 4})
	mem := newMemoryMetrics()
	c := s.NewClientWithOptions(client.Options{
		Logger:         sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
		MetricsHandler: mem,
	})
	ic, err := interceptor.New(interceptor.Options{Guards: map[string][]bucket.Guard{"Metered": {{Bucket: name, Cost: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	w := worker.New(c, queue, worker.Options{Interceptors: []temporalinterceptor.WorkerInterceptor{ic}})
	w.RegisterWorkflow(CallMetered)
	w.RegisterActivity(Metered)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runs := make([]client.WorkflowRun, jobs)
	for i := range runs {
		if runs[i], err = c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("metered-%d", i), TaskQueue: queue}, CallMetered); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range runs {
		if err := r.Get(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	w.Stop()
	// Close reports the tokens the Acquirer refused by itself, so the bucket counts them.
	if err := ic.Close(ctx); err != nil {
		t.Fatal(err)
	}

	tag := map[string]string{workflows.MetricTagBucket: name}
	result := func(r string) map[string]string {
		return map[string]string{workflows.MetricTagBucket: name, interceptor.MetricTagResult: r}
	}
	granted, _ := mem.total(interceptor.MetricAcquireRequests, result(interceptor.ResultGranted))
	denied, _ := mem.total(interceptor.MetricAcquireRequests, result(interceptor.ResultDenied))
	failed, _ := mem.total(interceptor.MetricAcquireRequests, result(interceptor.ResultError))
	tokens, _ := mem.total(interceptor.MetricAcquireGrantedTokens, tag)
	if granted != jobs || tokens != jobs || failed != 0 {
		t.Errorf("granted %v requests and %v tokens, %v failed; want %d, %d, 0", granted, tokens, failed, jobs, jobs)
	}
	if denied == 0 {
		t.Errorf("no denials: %d jobs on a bucket of 4 tokens a second should meet some", jobs)
	}
	var st workflows.Status
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		st, err = s.State(ctx, name)
		return err == nil && st.Denied == int64(denied) && st.Granted == int64(granted),
			fmt.Sprintf("bucket counted %d granted and %d denied (err %v); the interceptor %v and %v", st.Granted, st.Denied, err, granted, denied)
	})

	if _, n := mem.total(interceptor.MetricAcquireLatency, tag); n != int(granted+denied+failed) {
		t.Errorf("%d latency samples, want one per request: %v", n, granted+denied+failed)
	}
	_, waits := mem.total(interceptor.MetricActivityWait, tag)
	_, delays := mem.total(interceptor.MetricRetryDelay, tag)
	if waits+delays != int(denied) {
		t.Errorf("%d waits in the activity and %d retry delays, want one per denial: %v", waits, delays, denied)
	}
	updates, n := mem.total(interceptor.MetricAcquireUpdates, tag)
	carried, _ := mem.total(interceptor.MetricAcquireUpdateRequests, tag)
	if n == 0 || carried < updates || carried > granted+denied {
		t.Errorf("%v updates carrying %v requests, of %v requests in all", updates, carried, granted+denied)
	}
	t.Logf("%v granted, %v denied (%d waited out, %d retried later), %v requests in %v updates", granted, denied, waits, delays, carried, updates)

	// Tags: the bucket on every tb metric, and nothing per request.
	allowed := map[string]bool{"namespace": true, "client_name": true, "worker_type": true, "task_queue": true,
		"workflow_type": true, "activity_type": true, workflows.MetricTagBucket: true, interceptor.MetricTagResult: true}
	for _, s := range mem.samples() {
		if len(s.name) < 3 || s.name[:3] != "tb_" {
			continue
		}
		if s.tags[workflows.MetricTagBucket] != name {
			t.Errorf("%s tagged %v: want bucket %q", s.name, s.tags, name)
		}
		for k := range s.tags {
			if !allowed[k] {
				t.Errorf("%s tagged %s=%q", s.name, k, s.tags[k])
			}
		}
		// The Acquirer is shared by every activity type: its metrics are the client's.
		if (s.name == interceptor.MetricAcquireUpdates || s.name == interceptor.MetricAcquireUpdateRequests) &&
			(s.tags["activity_type"] != "none" || s.tags["task_queue"] != "none") {
			t.Errorf("%s tagged %v: want the client's tags, activity_type and task_queue none", s.name, s.tags)
		}
		if s.name == interceptor.MetricAcquireRequests && s.tags["activity_type"] != "Metered" {
			t.Errorf("%s tagged %v: want the activity's tags", s.name, s.tags)
		}
	}
}

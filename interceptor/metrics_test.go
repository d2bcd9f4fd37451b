package interceptor

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// recorder is a client.MetricsHandler that keeps every value recorded.
type recorder struct {
	s    *samples
	tags map[string]string
}

type samples struct {
	mu  sync.Mutex
	all []sample
}

type sample struct {
	name  string
	tags  map[string]string
	value float64
}

func newRecorder() recorder { return recorder{s: &samples{}} }

func (r recorder) WithTags(tags map[string]string) client.MetricsHandler {
	merged := maps.Clone(r.tags)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, tags)
	return recorder{s: r.s, tags: merged}
}

func (r recorder) add(name string, v float64) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	r.s.all = append(r.s.all, sample{name, r.tags, v})
}

type recordFunc func(float64)

func (f recordFunc) Inc(d int64)            { f(float64(d)) }
func (f recordFunc) Update(v float64)       { f(v) }
func (f recordFunc) Record(d time.Duration) { f(d.Seconds()) }
func (r recorder) Counter(name string) client.MetricsCounter {
	return recordFunc(func(v float64) { r.add(name, v) })
}
func (r recorder) Gauge(name string) client.MetricsGauge {
	return recordFunc(func(v float64) { r.add(name, v) })
}
func (r recorder) Timer(name string) client.MetricsTimer {
	return recordFunc(func(v float64) { r.add(name, v) })
}

// matching returns the samples of name whose tags include want.
func (r recorder) matching(name string, want map[string]string) []sample {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	var out []sample
	for _, s := range r.s.all {
		ok := s.name == name
		for k, v := range want {
			ok = ok && s.tags[k] == v
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// sum adds up the values of the matching samples: a counter's total.
func (r recorder) sum(name string, want map[string]string) float64 {
	total := 0.0
	for _, s := range r.matching(name, want) {
		total += s.value
	}
	return total
}

// runMetered runs the guarded activity Fetch (2 tokens from bucket "api")
// once, answered by f, with every metric recorded in rec.
func runMetered(t *testing.T, f *fakeBucket, opts Options, rec recorder) error {
	t.Helper()
	opts.Guards = map[string][]bucket.Guard{"Fetch": {{Bucket: "api", Cost: 2}}}
	opts.AcquirerOptions.MetricsHandler = rec.WithTags(map[string]string{"activity_type": "none"})
	acq, err := NewAcquirer(f, opts.AcquirerOptions)
	if err != nil {
		t.Fatal(err)
	}
	opts.Limiter = acq
	ic, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	var s testsuite.WorkflowTestSuite
	s.SetMetricsHandler(rec)
	env := s.NewTestActivityEnvironment()
	env.SetWorkerOptions(worker.Options{Interceptors: []temporalinterceptor.WorkerInterceptor{ic}})
	env.RegisterActivity(&guarded{})
	_, err = env.ExecuteActivity("Fetch")
	return err
}

func TestMetricsOfOneActivity(t *testing.T) {
	api := map[string]string{workflows.MetricTagBucket: "api"}
	result := func(r string) map[string]string {
		return map[string]string{workflows.MetricTagBucket: "api", MetricTagResult: r}
	}
	for _, c := range []struct {
		name    string
		respond func(workflows.AcquireBatch) (workflows.AcquireResponse, error)
		opts    Options
		// requests by result, then samples of latency, retry delay and wait
		granted, denied, errored, shadow float64
		latencies, delays, waits         int
		tokens                           float64
	}{
		{name: "granted", respond: grantAll, granted: 1, latencies: 1, tokens: 2},
		{name: "denied", respond: func(workflows.AcquireBatch) (workflows.AcquireResponse, error) {
			return workflows.AcquireResponse{}, rateLimited(3 * time.Second)
		}, denied: 1, latencies: 1, delays: 1},
		{name: "waited out", respond: func() func(workflows.AcquireBatch) (workflows.AcquireResponse, error) {
			n := 0
			return func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
				if n++; n == 1 {
					return workflows.AcquireResponse{}, rateLimited(20 * time.Millisecond)
				}
				return grantAll(b)
			}
		}(), denied: 1, granted: 1, latencies: 2, waits: 1, tokens: 2},
		{name: "shadow", respond: func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
			resp, err := grantAll(b)
			for i := range resp.Results {
				resp.Results[i].Shadow = true
			}
			return resp, err
		}, shadow: 1, latencies: 1},
		{name: "error", respond: func(workflows.AcquireBatch) (workflows.AcquireResponse, error) {
			return workflows.AcquireResponse{}, serviceerror.NewNotFound("no such workflow")
		}, errored: 1, latencies: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder()
			if err := runMetered(t, &fakeBucket{respond: c.respond}, c.opts, rec); (err == nil) != (c.granted+c.shadow > 0) {
				t.Errorf("activity error %v", err)
			}
			for _, n := range []struct {
				what      string
				got, want float64
			}{
				{"granted requests", rec.sum(MetricAcquireRequests, result(ResultGranted)), c.granted},
				{"denied requests", rec.sum(MetricAcquireRequests, result(ResultDenied)), c.denied},
				{"failed requests", rec.sum(MetricAcquireRequests, result(ResultError)), c.errored},
				{"shadow requests", rec.sum(MetricAcquireRequests, result(ResultShadow)), c.shadow},
				{"granted tokens", rec.sum(MetricAcquireGrantedTokens, api), c.tokens},
				{"latency samples", float64(len(rec.matching(MetricAcquireLatency, api))), float64(c.latencies)},
				{"retry delay samples", float64(len(rec.matching(MetricRetryDelay, api))), float64(c.delays)},
				{"wait samples", float64(len(rec.matching(MetricActivityWait, api))), float64(c.waits)},
			} {
				if n.got != n.want {
					t.Errorf("%s: got %v, want %v", n.what, n.got, n.want)
				}
			}
			for _, d := range rec.matching(MetricRetryDelay, api) {
				if d.value < 3 {
					t.Errorf("retry delay %vs, want the 3s the bucket said, or more", d.value)
				}
			}
			for _, w := range rec.matching(MetricActivityWait, api) {
				if w.value < 0.02 {
					t.Errorf("waited %vs, want the 20ms the bucket said, or more", w.value)
				}
			}
			// Each request here went to the bucket in an Update of its own.
			if got := rec.sum(MetricAcquireUpdates, api); got != float64(c.latencies) {
				t.Errorf("updates: got %v, want %d", got, c.latencies)
			}
			if got := rec.sum(MetricAcquireUpdateRequests, api); got != float64(c.latencies) {
				t.Errorf("requests carried: got %v, want %d", got, c.latencies)
			}
			// The Acquirer's metrics carry its own handler's tags, not the activity's.
			for _, s := range rec.matching(MetricAcquireUpdates, nil) {
				if s.tags["activity_type"] != "none" {
					t.Errorf("%s tagged %v, want activity_type none", s.name, s.tags)
				}
			}
		})
	}
}

func TestAcquirerMetricsCountUpdatesAndTheRequestsTheyCarry(t *testing.T) {
	rec := newRecorder()
	f := &fakeBucket{respond: grantAll, gate: make(chan struct{})}
	a, err := NewAcquirer(f, AcquirerOptions{MetricsHandler: rec})
	if err != nil {
		t.Fatal(err)
	}
	const callers = 50
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() { defer wg.Done(); a.Acquire(context.Background(), "b", fmt.Sprint(i), 1) }()
	}
	waitFor(t, "callers to queue", func() bool { return countPending(a, "b")+countSent(f) == callers })
	close(f.gate)
	wg.Wait()
	b := map[string]string{workflows.MetricTagBucket: "b"}
	if got, want := rec.sum(MetricAcquireUpdates, b), float64(len(f.sent())); got != want || got < 1 {
		t.Errorf("updates: got %v, want %v", got, want)
	}
	if got := rec.sum(MetricAcquireUpdateRequests, b); got != callers {
		t.Errorf("requests carried: got %v, want %d", got, callers)
	}
}

// The default Acquirer records nothing, and needs no handler.
func TestAcquirerWithoutMetricsHandler(t *testing.T) {
	a, err := NewAcquirer(&fakeBucket{respond: grantAll}, AcquirerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := a.Acquire(context.Background(), "b", "id", 1); err != nil || !d.Granted {
		t.Fatalf("got %+v, %v", d, err)
	}
}

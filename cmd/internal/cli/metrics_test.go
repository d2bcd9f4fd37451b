package cli_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/cli"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// The workload of the metrics tests: one bucket, on a task queue of its own
// so that only the tb worker under test runs it (the test server's own tb
// worker polls workflows.TaskQueue).
const (
	meteredBucket = "metered"
	meteredQueue  = "tb-metered"
	appQueue      = "metered-app"
)

// metered settles every call: half use nothing (a refund), half twice the
// token granted (a charge, which can leave a debt).
type metered struct{ calls atomic.Int64 }

func (m *metered) Metered(ctx context.Context) error {
	return interceptor.SetCost(ctx, "", 2*(m.calls.Add(1)%2))
}

func callMetered(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		ScheduleToCloseTimeout: 5 * time.Minute,
		StartToCloseTimeout:    30 * time.Second,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 0},
	})
	return workflow.ExecuteActivity(ctx, "Metered").Get(ctx, nil)
}

// workload is what startWorkload runs until the test ends.
type workload struct {
	server *testserver.Server
	// tbWorker is the metrics page of `tb worker`, app that of the app worker.
	tbWorker, app string
	jobs          atomic.Int64 // jobs completed
}

// startWorkload runs, on an in-process Temporal server, `tb worker` (through
// cli.Main) serving metrics, and an app worker guarding an activity with tb's
// interceptor on a client whose metrics cli.ServeMetrics serves; jobs that
// call the activity keep running faster than the bucket allows until the
// test ends. Denials come both short (waited out in the activity) and long
// (a retry delay), and every call settles up.
func startWorkload(t *testing.T) *workload {
	t.Helper()
	s := testserver.NewServer(t)
	s.Sync(t, bucket.Spec{Name: meteredBucket, Schedule: "@every 1s", Amount: 3, Maximum: 3, TaskQueue: meteredQueue})
	w := &workload{server: s}

	// tb worker, as a user runs it.
	workerAddr := freeAddress(t)
	ctx, stopWorker := context.WithCancel(context.Background())
	var errOut syncBuffer
	exited := make(chan int, 1)
	go func() {
		// No machine-wide Temporal config file: only the flags count.
		e := env{"TEMPORAL_CONFIG_FILE": filepath.Join(t.TempDir(), "none.toml")}
		exited <- cli.Main(ctx, cli.IO{Out: io.Discard, Err: &errOut, Env: e}, []string{"worker",
			"--address", s.GetFrontendHostPort(), "--namespace", s.GetDefaultNamespace(),
			"--task-queue", meteredQueue, "--metrics-address", workerAddr})
	}()
	t.Cleanup(func() {
		stopWorker()
		select {
		case code := <-exited:
			if code != 0 {
				t.Errorf("tb worker exited with %d: %s", code, errOut.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("tb worker did not stop within 30s")
		}
	})
	w.tbWorker = "http://" + workerAddr + cli.MetricsPath
	testserver.Eventually(t, time.Minute, func() (bool, string) {
		select {
		case code := <-exited:
			t.Fatalf("tb worker exited with %d: %s", code, errOut.String())
		default:
		}
		return strings.Contains(errOut.String(), "metrics at "+w.tbWorker), "tb worker said: " + errOut.String()
	})

	// The app worker.
	m, err := cli.ServeMetrics("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	w.app = m.URL()
	c := s.NewClientWithOptions(client.Options{Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)), MetricsHandler: m.Handler()})
	ic, err := interceptor.New(interceptor.Options{
		Guards:  map[string][]bucket.Guard{"Metered": {{Bucket: meteredBucket, Cost: 1}}},
		MaxWait: 300 * time.Millisecond, // a refill a second: some denials are waited out, others retried
	})
	if err != nil {
		t.Fatal(err)
	}
	wk := worker.New(c, appQueue, worker.Options{Interceptors: []temporalinterceptor.WorkerInterceptor{ic}})
	wk.RegisterWorkflowWithOptions(callMetered, workflow.RegisterOptions{Name: "CallMetered"})
	wk.RegisterActivity(&metered{})
	if err := wk.Start(); err != nil {
		t.Fatal(err)
	}
	jobsCtx, stopJobs := context.WithCancel(context.Background())
	var loops sync.WaitGroup
	for slot := range 8 {
		loops.Add(1)
		go func() {
			defer loops.Done()
			for n := 0; jobsCtx.Err() == nil; n++ {
				run, err := c.ExecuteWorkflow(jobsCtx, client.StartWorkflowOptions{ID: fmt.Sprintf("metered-%d-%d", slot, n), TaskQueue: appQueue}, "CallMetered")
				if err == nil && run.Get(jobsCtx, nil) == nil {
					w.jobs.Add(1)
				}
			}
		}()
	}
	t.Cleanup(func() {
		stopJobs()
		loops.Wait()
		wk.Stop()
		ic.Close(context.Background())
		c.Close()
		m.Close()
	})
	return w
}

// scrape reads a metrics page with the Prometheus text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	var p expfmt.TextParser
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: not the Prometheus text format: %v", url, err)
	}
	return families
}

// value returns the value of the series of family name with label bucket,
// summed over its other labels: a counter's or gauge's value, a histogram's
// sample count. ok is false when there is none.
func value(families map[string]*dto.MetricFamily, name, bucketName string) (v float64, ok bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		labeled := false
		for _, l := range m.GetLabel() {
			labeled = labeled || (l.GetName() == workflows.MetricTagBucket && l.GetValue() == bucketName)
		}
		if !labeled {
			continue
		}
		ok = true
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return v, ok
}

// TestWorkerServesMetrics scrapes `tb worker --metrics-address` while a
// workload runs: the bucket workflow's series are there, tagged with the
// bucket, and move from one scrape to the next; the SDK's own are beside them.
func TestWorkerServesMetrics(t *testing.T) {
	w := startWorkload(t)
	series := []string{"tb_bucket_tokens", "tb_bucket_debt", "tb_bucket_refills_total", "tb_bucket_refill_lag_seconds",
		"tb_bucket_refunded_tokens_total", "tb_bucket_charged_tokens_total"}
	var first map[string]*dto.MetricFamily
	testserver.Eventually(t, time.Minute, func() (bool, string) {
		first = scrape(t, w.tbWorker)
		var missing []string
		for _, name := range series {
			if _, ok := value(first, name, meteredBucket); !ok {
				missing = append(missing, name)
			}
		}
		return len(missing) == 0, fmt.Sprintf("no series tagged bucket=%q of %v yet (%d jobs done)", meteredBucket, missing, w.jobs.Load())
	})
	if first["temporal_workflow_task_execution_latency_seconds"] == nil {
		t.Errorf("the SDK's own metrics are not served beside tb's: families %v", names(first))
	}
	tokens, _ := value(first, "tb_bucket_tokens", meteredBucket)
	testserver.Eventually(t, time.Minute, func() (bool, string) {
		next := scrape(t, w.tbWorker)
		var still []string
		// (Not the refill lag: once a scheduled refill reached it, the bucket
		// applies the next ticks by itself, and the lag is of signals only.)
		for _, name := range []string{"tb_bucket_refills_total", "tb_bucket_refunded_tokens_total", "tb_bucket_charged_tokens_total"} {
			before, _ := value(first, name, meteredBucket)
			if after, _ := value(next, name, meteredBucket); after <= before {
				still = append(still, fmt.Sprintf("%s %v", name, after))
			}
		}
		if now, _ := value(next, "tb_bucket_tokens", meteredBucket); now == tokens {
			still = append(still, fmt.Sprintf("tb_bucket_tokens %v", now))
		}
		return len(still) == 0, fmt.Sprintf("not moving since the first scrape: %v", still)
	})
}

func names(families map[string]*dto.MetricFamily) []string {
	out := make([]string, 0, len(families))
	for name := range families {
		out = append(out, name)
	}
	return out
}

package cli_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/server/temporaltest"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/cli"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

// After --retire a bucket's workflow has completed: tb tokens says so and
// exits non-zero, instead of showing the last state as if it ran.
func TestTokensReportsARetiredBucket(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, _ := against(t, s)
	write(twoBuckets)
	if r := tbRun("sync-schedules"); r.code != 0 {
		t.Fatal(r)
	}
	waitListed(t, s, 2)
	write(twoBuckets[:strings.Index(twoBuckets, "  - name: beta")])
	if r := tbRun("sync-schedules", "--retire"); r.code != 0 {
		t.Fatal(r)
	}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		desc, err := s.Client.DescribeWorkflowExecution(context.Background(), workflows.BucketID("beta"), "")
		if err != nil {
			return false, err.Error()
		}
		st := desc.GetWorkflowExecutionInfo().GetStatus().String()
		return st == "Completed", "beta's workflow is " + st
	})

	r := tbRun("tokens", "beta")
	t.Logf("tb tokens beta:\n%s%s", r.out, r.err)
	row := table(r.out)["beta"]
	if r.code != cli.ExitFailure || len(row) != 12 || !strings.HasPrefix(row[11], "not running: retired (completed at 20") ||
		r.err != "tb: 1 of 1 buckets could not be read\n" {
		t.Errorf("tokens of a retired bucket: exit %d, row %q, stderr %q", r.code, row, r.err)
	}
	both := tbRun("tokens", "alpha", "beta", "-o", "json")
	if both.code != cli.ExitFailure || !strings.Contains(both.out, `"error": "not running: retired (completed at `) || !strings.Contains(both.out, `"tokens": 10`) {
		t.Errorf("tokens -o json: exit %d, %s", both.code, both.out)
	}
}

// cancelAfter is an output that ends the command once it has printed n tables.
type cancelAfter struct {
	mu     sync.Mutex
	n      int
	cancel context.CancelFunc
	out    strings.Builder
}

func (w *cancelAfter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out.Write(p)
	if w.n -= strings.Count(string(p), "BUCKET"); w.n <= 0 {
		w.cancel()
	}
	return len(p), nil
}

// tb tokens --watch exits non-zero when its last refresh could not read every bucket.
func TestTokensWatchExitCode(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, path := against(t, s)
	write(twoBuckets)
	if r := tbRun("sync-schedules"); r.code != 0 {
		t.Fatal(r)
	}
	watch := func(names ...string) (code int, out, errOut string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		w := &cancelAfter{n: 3, cancel: cancel}
		var stderr strings.Builder
		args := append([]string{"tokens", "--watch", "--interval", "50ms", "--address", s.GetFrontendHostPort(),
			"--namespace", s.GetDefaultNamespace(), "-c", path}, names...)
		code = cli.Main(ctx, cli.IO{Out: w, Err: &stderr, Env: env{"TEMPORAL_CONFIG_FILE": t.TempDir() + "/none.toml"}}, args)
		if strings.Count(w.out.String(), "BUCKET") < 3 {
			t.Errorf("tb %q printed %d tables, want 3:\n%s", args, strings.Count(w.out.String(), "BUCKET"), w.out.String())
		}
		return code, w.out.String(), stderr.String()
	}
	if code, out, errOut := watch("alpha", "beta"); code != cli.ExitOK || errOut != "" {
		t.Errorf("watching running buckets: exit %d, stderr %q\n%s", code, errOut, out)
	}
	code, out, errOut := watch("alpha", "nope")
	if code != cli.ExitFailure || errOut != "tb: 1 of 2 buckets could not be read\n" {
		t.Errorf("watching a bucket that is not running: exit %d, stderr %q\n%s", code, errOut, out)
	}
}

// With no tb worker, a query gets no answer: tb says what to check rather
// than a gRPC deadline.
func TestTokensWithoutAWorker(t *testing.T) {
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	ctx := context.Background()
	spec := bucket.Spec{Name: "lonely", Schedule: "@hourly", Amount: 1, Maximum: 1}
	if _, err := operator.Apply(ctx, ts.GetDefaultClient(), &bucket.Config{Buckets: []bucket.Spec{spec}}, operator.Options{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := tb(t, ctx, nil, "tokens", "lonely", "--address", ts.GetFrontendHostPort(), "--namespace", ts.GetDefaultNamespace())
	t.Logf("tb tokens lonely, after %v:\n%s%s", time.Since(start).Round(time.Millisecond), r.out, r.err)
	row := table(r.out)["lonely"]
	if r.code != cli.ExitFailure || len(row) != 12 || row[11] != "no answer: is a tb worker running?" || strings.Contains(r.out, "deadline") {
		t.Errorf("tokens without a worker: exit %d, row %q\n%s", r.code, row, r.out)
	}
}

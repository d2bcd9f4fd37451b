package cli_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/server/temporaltest"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/cli"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
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

const keyedBuckets = `buckets:
  - name: per_customer
    schedule: "@hourly"
    amount: 5
    maximum: 5
    keyed: true
    shards: 2
`

// A keyed bucket through the command: sync-schedules starts its shards; tb
// tokens shows its keys and the emptiest; --key shows one key; tb refill
// --key tops it up; and without a key, tb refill says to name one.
func TestTokensOfAKeyedBucket(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, _ := against(t, s)
	write(keyedBuckets)
	if r := tbRun("sync-schedules"); r.code != 0 || !strings.Contains(r.out, "per_customer") {
		t.Fatal(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	for i := range 4 {
		if d, err := a.AcquireKey(ctx, interceptor.Key{Bucket: "per_customer", Key: "acme", Shards: 2}, fmt.Sprint("r", i), 1); err != nil || !d.Granted {
			t.Fatalf("acquire %d: %+v %v", i, d, err)
		}
	}

	r := tbRun("tokens")
	t.Logf("tb tokens:\n%s", r.out)
	row := table(strings.SplitN(r.out, "\nper_customer:", 2)[0])["per_customer"]
	if r.code != 0 || len(row) != 12 || row[1] != "1 keys, each /5" || row[6] != "4" ||
		!strings.Contains(r.out, "per_customer: 1 keys held on 2 shards; emptiest: acme 1/5") {
		t.Errorf("tb tokens: exit %d, row %q", r.code, row)
	}
	r = tbRun("tokens", "per_customer", "--key", "acme", "--key", "unused")
	t.Logf("tb tokens --key:\n%s", r.out)
	rows := table(r.out)
	if r.code != 0 || len(rows) != 1 || !regexp.MustCompile(`per_customer\s+acme\s+1\s`).MatchString(r.out) ||
		!regexp.MustCompile(`per_customer\s+unused\s+5\s`).MatchString(r.out) {
		t.Errorf("tb tokens --key: exit %d\n%s", r.code, r.out)
	}
	if r := tbRun("refill", "per_customer", "--key", "acme", "--amount", "2"); r.code != 0 || r.out != "bucket per_customer, key acme: 1 → 3 tokens\n" {
		t.Errorf("tb refill --key: %+v", r)
	}
	if r := tbRun("refill", "per_customer"); r.code == 0 || !strings.Contains(r.err, "is keyed: refill one of its keys") {
		t.Errorf("tb refill of a keyed bucket without --key: %+v", r)
	}
	if r := tbRun("tokens", "per_customer", "--key", "acme", "-o", "json"); r.code != 0 || !strings.Contains(r.out, `"tokens": 3`) || !strings.Contains(r.out, `"key": "acme"`) {
		t.Errorf("tb tokens --key -o json: %+v", r)
	}
	if r := tbRun("tokens", "--key", "acme"); r.code != cli.ExitUsage {
		t.Errorf("tb tokens --key without a NAME: %+v", r)
	}
}

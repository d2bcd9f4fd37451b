package e2e_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
)

// provider is an API stricter than the bucket in front of it: limit calls
// per window, then 429 with Retry-After until the window ends. It logs every call.
type provider struct {
	limit  int
	window time.Duration

	mu    sync.Mutex
	start time.Time
	n     int
	calls []providerCall
}

type providerCall struct {
	at      time.Time
	process string
	status  int
	until   time.Time // for a 429: when it told the caller to come back
}

func (p *provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.start) >= p.window {
		p.start, p.n = now, 0
	}
	c := providerCall{at: now, process: r.Header.Get("X-Process"), status: http.StatusOK}
	if p.n >= p.limit {
		c.status, c.until = http.StatusTooManyRequests, p.start.Add(p.window)
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(time.Until(c.until).Seconds()))))
		c.until = now.Add(time.Duration(math.Ceil(time.Until(c.until).Seconds())) * time.Second)
	} else {
		p.n++
	}
	p.calls = append(p.calls, c)
	w.WriteHeader(c.status)
}

// TestUpstream429PausesEveryWorker: an API allows 3 calls every 3 s while its
// bucket believes 5 a second. After the API answers 429 with Retry-After, no
// activity on any worker calls it again before then, beyond the calls
// already granted when the report was made; every activity finishes; and
// each process sees at most one 429 per pause once it has seen one: only
// calls already made together with the first can be refused too.
func TestUpstream429PausesEveryWorker(t *testing.T) {
	const workflows = 15
	s := testserver.NewServer(t)
	spec := bucket.Spec{Name: "strict_api", Schedule: "@every 1s", Amount: 5, Maximum: 5}
	s.Sync(t, spec)
	api := &provider{limit: 3, window: 3 * time.Second}
	srv := httptest.NewServer(api)
	defer srv.Close()
	for p := range 2 {
		process := fmt.Sprint("p", p)
		ic, err := interceptor.New(interceptor.Options{Guards: map[string][]bucket.Guard{"CallStrict": {{Bucket: spec.Name, Cost: 1}}}})
		if err != nil {
			t.Fatal(err)
		}
		w := worker.New(s.NewClient(), "upstream", worker.Options{Interceptors: []temporalinterceptor.WorkerInterceptor{ic}})
		w.RegisterWorkflowWithOptions(func(ctx workflow.Context) error {
			ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
				ScheduleToCloseTimeout: 2 * time.Minute,
				StartToCloseTimeout:    10 * time.Second,
				RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 0},
			})
			return workflow.ExecuteActivity(ctx, "CallStrict").Get(ctx, nil)
		}, workflow.RegisterOptions{Name: "CallStrictOnce"})
		w.RegisterActivityWithOptions(func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			req.Header.Set("X-Process", process)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			return interceptor.ReportHTTP(ctx, "", resp)
		}, activity.RegisterOptions{Name: "CallStrict"})
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Stop(); _ = ic.Close(context.Background()) })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runs := make([]client.WorkflowRun, workflows)
	for i := range runs {
		var err error
		if runs[i], err = s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprint("strict-", i), TaskQueue: "upstream"}, "CallStrictOnce"); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range runs {
		if err := r.Get(ctx, nil); err != nil {
			t.Fatalf("workflow %d: %v", i, err)
		}
	}
	api.mu.Lock()
	calls := append([]providerCall(nil), api.calls...)
	api.mu.Unlock()
	// A grant made before the pause reached the bucket may still call: allow
	// the moments the report takes to arrive, then nothing until the pause ends.
	propagation := 300 * time.Millisecond
	if raceEnabled {
		propagation = time.Second // the race detector slows the server's signal and update handling several times over
	}
	// local: a call of the process that saw a 429 reaching the API that
	// long after, which it must not make.
	const local = 50 * time.Millisecond
	var ok, limited int
	first := map[string]map[time.Time]providerCall{} // each process's first 429 of each pause
	for i, c := range calls {
		if c.status == http.StatusOK {
			ok++
			continue
		}
		limited++
		pause := c.until.Truncate(time.Second)
		if first[c.process] == nil {
			first[c.process] = map[time.Time]providerCall{}
		}
		if f, seen := first[c.process][pause]; !seen {
			first[c.process][pause] = c
		} else if c.at.After(f.at.Add(local)) {
			t.Errorf("%s saw a second 429 for the pause until %s, calling %v after its first", c.process, pause.Format("15:04:05"), c.at.Sub(f.at).Round(time.Millisecond))
		}
		for _, later := range calls[i+1:] {
			if later.at.After(c.at.Add(propagation)) && later.at.Before(c.until.Add(-50*time.Millisecond)) {
				t.Errorf("a call from %s at %s, %v after a 429 to %s that said to come back at %s", later.process, later.at.Format("15:04:05.000"), later.at.Sub(c.at).Round(time.Millisecond), c.process, c.until.Format("15:04:05"))
			}
		}
	}
	if ok != workflows {
		t.Errorf("the API answered %d calls, want %d", ok, workflows)
	}
	if limited == 0 {
		t.Fatal("the API never answered 429: the test tests nothing")
	}
	st, err := s.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d calls answered, %d refused with 429; the bucket paused %d times", ok, limited, st.Pauses)
	if st.Pauses == 0 {
		t.Error("the bucket never paused")
	}
}

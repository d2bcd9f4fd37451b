package interceptor_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"golang.org/x/sync/errgroup"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/internal/tbtest"
	"github.com/tokenbucket/tb/workflows"
)

const appQueue = "app"

// recorder is the guarded activity: it notes when each run starts.
type recorder struct {
	mu     sync.Mutex
	starts []time.Time
}

func (r *recorder) CallAPI(ctx context.Context) error {
	now := time.Now()
	r.mu.Lock()
	r.starts = append(r.starts, now)
	r.mu.Unlock()
	return nil
}

func (r *recorder) sorted() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := append([]time.Time(nil), r.starts...)
	sort.Slice(s, func(i, j int) bool { return s[i].Before(s[j]) })
	return s
}

// CallOnce runs the guarded activity with the retry policy tb recommends:
// unlimited attempts, bounded by ScheduleToClose.
func CallOnce(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		ScheduleToCloseTimeout: 5 * time.Minute,
		StartToCloseTimeout:    30 * time.Second,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 0},
	})
	return workflow.ExecuteActivity(ctx, "CallAPI").Get(ctx, nil)
}

// startAppWorkers starts n workers, each with its own client as separate
// processes would have, each guarding CallAPI with the named bucket.
func startAppWorkers(t *testing.T, s *tbtest.Server, n, slots int, bucketName string, rec *recorder) {
	t.Helper()
	for range n {
		ic, err := interceptor.New(interceptor.Options{Guards: map[string]bucket.Guard{"CallAPI": {Bucket: bucketName, Cost: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		w := worker.New(s.NewClient(), appQueue, worker.Options{
			MaxConcurrentActivityExecutionSize: slots,
			Interceptors:                       []temporalinterceptor.WorkerInterceptor{ic},
		})
		w.RegisterWorkflow(CallOnce)
		w.RegisterActivity(rec)
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
	}
}

// runAll starts n CallOnce workflows at once and waits for all of them.
func runAll(ctx context.Context, c client.Client, prefix string, n int) error {
	var g errgroup.Group
	for i := range n {
		g.Go(func() error {
			run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("%s-%d", prefix, i), TaskQueue: appQueue}, CallOnce)
			if err != nil {
				return err
			}
			return run.Get(ctx, nil)
		})
	}
	return g.Wait()
}

// TestBacklogDrainsAtTheBucketRate: 60 guarded activities on three workers
// with 20 slots each share a bucket refilled with 5 tokens every second,
// holding at most 5. No refill window may see more starts than the tokens it
// had, and the backlog must drain within 1.5x the ideal time.
func TestBacklogDrainsAtTheBucketRate(t *testing.T) {
	const (
		activities = 60
		amount     = 5
		maximum    = 5
	)
	s := tbtest.NewServer(t)
	spec := bucket.Spec{Name: "drain", Schedule: "@every 1s", Amount: amount, Maximum: maximum}
	s.Sync(t, spec)
	rec := &recorder{}
	startAppWorkers(t, s, 3, 20, spec.Name, rec)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	begin := time.Now()
	if err := runAll(ctx, s.Client, "drain", activities); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(begin)

	starts := rec.sorted()
	if len(starts) != activities {
		t.Fatalf("%d activity bodies ran, want %d", len(starts), activities)
	}
	refills := refillTimes(t, s, spec.Name)
	worst := checkWindows(t, starts, refills, maximum, maximum)

	ideal := time.Duration(activities-maximum) * time.Second / amount
	t.Logf("drained %d activities in %v; ideal %v (%.2fx); most starts in one refill window: %d (tokens per window: %d)",
		activities, elapsed.Round(time.Millisecond), ideal, float64(elapsed)/float64(ideal), worst, maximum)
	if elapsed > ideal*3/2 {
		t.Errorf("drain took %v, more than 1.5x the ideal %v", elapsed, ideal)
	}
}

// refillTimes returns when the bucket received each refill signal, from its history.
func refillTimes(t *testing.T, s *tbtest.Server, name string) []time.Time {
	t.Helper()
	var times []time.Time
	it := s.Client.GetWorkflowHistory(context.Background(), workflows.BucketID(name), "", false, 0)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if sig := e.GetWorkflowExecutionSignaledEventAttributes(); sig != nil && sig.SignalName == workflows.RefillSignal {
			times = append(times, e.GetEventTime().AsTime())
		}
	}
	return times
}

// checkWindows fails the test if the starts between two refills exceed the
// tokens the bucket could hold, and returns the most starts seen in one window.
func checkWindows(t *testing.T, starts, refills []time.Time, initial, maximum int) int {
	t.Helper()
	worst := 0
	for i := -1; i < len(refills); i++ {
		from, to, limit := time.Time{}, time.Time{}, maximum
		if i < 0 {
			to, limit = refills[0], initial
		} else {
			from = refills[i]
			if i+1 < len(refills) {
				to = refills[i+1]
			}
		}
		n := 0
		for _, st := range starts {
			if !st.Before(from) && (to.IsZero() || st.Before(to)) {
				n++
			}
		}
		worst = max(worst, n)
		if n > limit {
			t.Errorf("%d starts between refill %d (%s) and the next; the bucket held at most %d",
				n, i, from.Format("15:04:05.000"), limit)
		}
	}
	return worst
}

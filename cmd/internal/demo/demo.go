// Package demo runs the workload behind tb dev --demo: jobs that call a
// simulated quota-limited API through tb's interceptor, faster than the quota allows.
package demo

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/activities"
	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
)

// TaskQueue is where the demo's jobs run.
const TaskQueue = "tb-demo"

// JobWorkflowType is the demo job: one call to the API.
const JobWorkflowType = "DemoJob"

// DefaultBucket is the bucket the demo uses when buckets.yaml guards no CallDemoAPI.
var DefaultBucket = bucket.Spec{Name: "demo_api", Schedule: "@every 1s", Amount: 5, Maximum: 5}

// Job calls the API once, retrying as long as the bucket denies it.
func Job(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		ScheduleToCloseTimeout: 10 * time.Minute,
		StartToCloseTimeout:    time.Minute,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 0},
	})
	return workflow.ExecuteActivity(ctx, activities.DemoActivity).Get(ctx, nil)
}

// Options configure the demo.
type Options struct {
	// Jobs is how many jobs are kept running at once. Default 20.
	Jobs int
	// Latency bounds the API's simulated response time. Default 50ms.
	Latency time.Duration
	// APILimit is how many calls the API allows per refill window; fewer
	// than the bucket's maximum makes it answer 429s, which tb's pause
	// follows. Default: the bucket's maximum.
	APILimit int64
}

// Demo is a running demo workload.
type Demo struct {
	API       *activities.DemoAPI
	Bucket    bucket.Spec
	APILimit  int64
	completed atomic.Int64
	failed    atomic.Int64
	w         worker.Worker
	wg        sync.WaitGroup
}

// Start starts a worker guarding CallDemoAPI with spec's bucket, and keeps
// opts.Jobs jobs running until ctx ends. Stop waits for it to wind down.
func Start(ctx context.Context, c client.Client, spec bucket.Spec, opts Options) (*Demo, error) {
	if opts.Jobs <= 0 {
		opts.Jobs = 20
	}
	if opts.Latency <= 0 {
		opts.Latency = 50 * time.Millisecond
	}
	if opts.APILimit <= 0 {
		opts.APILimit = spec.Maximum
	}
	api, err := activities.NewDemoAPI(spec, opts.Latency, opts.APILimit)
	if err != nil {
		return nil, err
	}
	ic, err := interceptor.New(interceptor.Options{Guards: map[string][]bucket.Guard{activities.DemoActivity: {{Bucket: spec.Name, Cost: 1}}}})
	if err != nil {
		return nil, err
	}
	w := worker.New(c, TaskQueue, worker.Options{
		MaxConcurrentActivityExecutionSize: opts.Jobs,
		Interceptors:                       []temporalinterceptor.WorkerInterceptor{ic},
	})
	w.RegisterWorkflowWithOptions(Job, workflow.RegisterOptions{Name: JobWorkflowType})
	w.RegisterActivityWithOptions(api.Call, activity.RegisterOptions{Name: activities.DemoActivity})
	if err := w.Start(); err != nil {
		return nil, fmt.Errorf("starting the demo worker: %w", err)
	}
	d := &Demo{API: api, Bucket: spec, APILimit: opts.APILimit, w: w}
	for i := range opts.Jobs {
		d.wg.Add(1)
		go d.loop(ctx, c, i)
	}
	return d, nil
}

// loop runs one job after another.
func (d *Demo) loop(ctx context.Context, c client.Client, slot int) {
	defer d.wg.Done()
	for n := 0; ctx.Err() == nil; n++ {
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID:        fmt.Sprintf("tb-demo-%d-%d-%d", time.Now().UnixNano(), slot, n),
			TaskQueue: TaskQueue,
		}, JobWorkflowType)
		if err == nil {
			err = run.Get(ctx, nil)
		}
		switch {
		case ctx.Err() != nil:
		case err != nil:
			d.failed.Add(1)
		default:
			d.completed.Add(1)
		}
	}
}

// Counts returns the jobs completed and failed so far.
func (d *Demo) Counts() (completed, failed int64) { return d.completed.Load(), d.failed.Load() }

// Stop waits for the job loops to end (cancel Start's context first) and stops the worker.
func (d *Demo) Stop() {
	d.wg.Wait()
	d.w.Stop()
}

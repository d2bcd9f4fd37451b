package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/devserver"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

var quiet = sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))

// env is one embedded Temporal server with a tb worker, fresh for each scenario.
type env struct {
	srv     *devserver.Server
	c       client.Client
	clients []client.Client
	workers []worker.Worker
	// resourceExhausted counts RESOURCE_EXHAUSTED answers to every client made by newClient.
	resourceExhausted atomic.Int64
	// updatesAborted counts the updates the server aborted (see abortCounter).
	updatesAborted *atomic.Int64
}

// abortCounter is a slog.Handler for the server's log that counts the
// updates it aborted ("workflow update was aborted"): the frontend logs each
// as a service failure, and retries it; a client does not see it.
type abortCounter struct {
	n     *atomic.Int64
	attrs []slog.Attr
}

func (h abortCounter) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelError
}

func (h abortCounter) Handle(_ context.Context, r slog.Record) error {
	aborted := slices.ContainsFunc(h.attrs, isAbort)
	r.Attrs(func(a slog.Attr) bool {
		aborted = aborted || isAbort(a)
		return !aborted
	})
	if aborted {
		h.n.Add(1)
	}
	return nil
}

func (h abortCounter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return abortCounter{n: h.n, attrs: append(slices.Clone(h.attrs), attrs...)}
}

func (h abortCounter) WithGroup(string) slog.Handler { return h }

func isAbort(a slog.Attr) bool {
	return a.Key == "error" && strings.Contains(a.Value.String(), "workflow update was aborted")
}

// newEnv starts a server (with dynamic config overrides dc, if any) and,
// if tbWorker, a tb worker in this process.
func newEnv(ctx context.Context, tbWorker bool, dc map[string]any) (*env, error) {
	aborted := new(atomic.Int64)
	srv, err := devserver.Start(ctx, devserver.Options{Address: "127.0.0.1:0", Ephemeral: true, DynamicConfig: dc,
		Logger: slog.New(abortCounter{n: aborted})})
	if err != nil {
		return nil, err
	}
	e := &env{srv: srv, updatesAborted: aborted}
	if e.c, err = e.newClient(); err != nil {
		e.close()
		return nil, err
	}
	if tbWorker {
		w := worker.New(e.c, workflows.TaskQueue, worker.Options{})
		workflows.Register(w)
		if err := e.start(w); err != nil {
			e.close()
			return nil, err
		}
	}
	return e, nil
}

// newClient returns a client with its own connection, as a separate process would have.
func (e *env) newClient() (client.Client, error) {
	return e.newClientWithMetrics(nil)
}

// newClientWithMetrics is newClient with the SDK's metrics going to h (nil for none).
func (e *env) newClientWithMetrics(h client.MetricsHandler) (client.Client, error) {
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if status.Code(err) == codes.ResourceExhausted {
			e.resourceExhausted.Add(1)
		}
		return err
	}
	c, err := client.Dial(client.Options{
		HostPort:          e.srv.Address(),
		Namespace:         e.srv.Namespace(),
		Logger:            quiet,
		MetricsHandler:    h,
		ConnectionOptions: client.ConnectionOptions{DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(count)}},
	})
	if err != nil {
		return nil, err
	}
	e.clients = append(e.clients, c)
	return c, nil
}

func (e *env) start(w worker.Worker) error {
	if err := w.Start(); err != nil {
		return err
	}
	e.workers = append(e.workers, w)
	return nil
}

// startBucket starts a bucket workflow directly, with no refill Schedule.
func (e *env) startBucket(ctx context.Context, spec bucket.Spec, maxUpdatesPerRun int) error {
	_, err := e.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.BucketID(spec.Name), TaskQueue: workflows.TaskQueue},
		workflows.BucketWorkflowType, workflows.BucketInput{Spec: spec, MaxUpdatesPerRun: maxUpdatesPerRun})
	return err
}

// sync creates buckets with their refill Schedules.
func (e *env) sync(ctx context.Context, specs ...bucket.Spec) error {
	_, err := operator.Apply(ctx, e.c, &bucket.Config{Buckets: specs}, operator.Options{})
	return err
}

// state reads a bucket's state with operator.State.
func (e *env) state(ctx context.Context, name string) (workflows.Status, error) {
	return operator.State(ctx, e.c, name)
}

func (e *env) close() {
	for _, w := range e.workers {
		w.Stop()
	}
	for _, c := range e.clients {
		c.Close()
	}
	e.srv.Stop()
}

// started returns when the named bucket's Schedule started the refill for
// the tick at nominal time tick.
func (e *env) started(ctx context.Context, name string, tick time.Time) (time.Time, error) {
	d, err := e.c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(name)).Describe(ctx)
	if err != nil {
		return time.Time{}, err
	}
	for _, a := range d.Info.RecentActions {
		if a.ScheduleTime.Equal(tick) {
			return a.ActualTime, nil
		}
	}
	return time.Time{}, fmt.Errorf("schedule %s: tick %v not started", name, tick)
}

// Package testserver starts what end-to-end tests need: an in-process Temporal
// server with a tb worker, and a way to wait for a condition without sleeping.
package testserver

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

// quietLogger drops the SDK's logs, which would drown a test's own output.
var quietLogger = log.NewStructuredLogger(slog.New(slog.DiscardHandler))

// Server is an in-process Temporal server (SQLite in memory) with a worker
// running the bucket and refill workflows on workflows.TaskQueue.
type Server struct {
	*temporaltest.TestServer
	Client client.Client
}

// NewServer starts a server for the test; it stops when the test ends.
func NewServer(t *testing.T) *Server {
	t.Helper()
	quiet := client.Options{Logger: quietLogger}
	ts := temporaltest.NewServer(temporaltest.WithT(t), temporaltest.WithBaseClientOptions(quiet))
	ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r) })
	return &Server{TestServer: ts, Client: ts.GetDefaultClient()}
}

// NewClient returns another client, as a separate process would have.
func (s *Server) NewClient() client.Client {
	return s.NewClientWithOptions(client.Options{Logger: quietLogger})
}

// Sync creates the buckets' workflows and refill Schedules, with operator.Apply.
func (s *Server) Sync(t testing.TB, specs ...bucket.Spec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := operator.Apply(ctx, s.Client, &bucket.Config{Buckets: specs}, operator.Options{}); err != nil {
		t.Fatal(err)
	}
}

// State reads a bucket's state with operator.State.
func (s *Server) State(ctx context.Context, name string) (workflows.Status, error) {
	return operator.State(ctx, s.Client, name)
}

// Eventually polls cond until it holds or timeout passes, then fails the test
// with cond's last explanation.
func Eventually(t testing.TB, timeout time.Duration, cond func() (ok bool, why string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, why)
		}
		<-tick.C
	}
}

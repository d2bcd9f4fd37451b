package devserver_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/cmd/internal/devserver"
)

const (
	taskQueue  = "devserver-test"
	signalName = "go"
)

// testLogger sends the server's warnings and errors to the test log, which
// shows only for failing tests (or with -v). Call it before start, so that it
// stops writing only after the server has stopped.
func testLogger(t *testing.T) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// tWriter writes to t.Log until the test's cleanup, and discards afterwards
// (t.Log panics once the test has finished).
type tWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func start(t *testing.T, opts devserver.Options) *devserver.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began := time.Now()
	s, err := devserver.Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("server on %s started in %v", s.Address(), time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

func dial(t *testing.T, s *devserver.Server) client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{
		HostPort:  s.Address(),
		Namespace: s.Namespace(),
		Logger:    sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
	if err != nil {
		t.Fatalf("Dial %s: %v", s.Address(), err)
	}
	return c
}

func startWorker(t *testing.T, c client.Client) worker.Worker {
	t.Helper()
	w := worker.New(c, taskQueue, worker.Options{})
	w.RegisterWorkflow(greet)
	w.RegisterWorkflow(awaitSignal)
	if err := w.Start(); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	return w
}

func greet(_ workflow.Context, name string) (string, error) {
	return "hello " + name, nil
}

func awaitSignal(ctx workflow.Context) (string, error) {
	var v string
	workflow.GetSignalChannel(ctx, signalName).Receive(ctx, &v)
	return "got " + v, nil
}

func TestEphemeralRunsWorkflow(t *testing.T) {
	t.Parallel()
	s := start(t, devserver.Options{Address: "127.0.0.1:0", Ephemeral: true, Logger: testLogger(t)})
	if s.Namespace() != "default" {
		t.Errorf("Namespace() = %q, want default", s.Namespace())
	}
	if s.UIAddress() != "" {
		t.Errorf("UIAddress() = %q, want empty", s.UIAddress())
	}
	if strings.HasSuffix(s.Address(), ":0") {
		t.Errorf("Address() = %q, want the port actually bound", s.Address())
	}

	c := dial(t, s)
	w := startWorker(t, c)
	// Worker and client go before the server, also when the test fails early.
	closeClient := sync.OnceFunc(func() { w.Stop(); c.Close() })
	defer closeClient()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: taskQueue}, greet, "tb")
	if err != nil {
		t.Fatalf("ExecuteWorkflow: %v", err)
	}
	var got string
	if err := run.Get(ctx, &got); err != nil {
		t.Fatalf("workflow result: %v", err)
	}
	if got != "hello tb" {
		t.Errorf("result = %q, want %q", got, "hello tb")
	}
	closeClient()

	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

const (
	persistedWorkflowID = "await-signal"
	persistedScheduleID = "persisted-schedule"
	// childDBEnv, when set, makes TestStatePersistsAcrossProcesses run only
	// its first half, against the database file the variable names.
	childDBEnv = "DEVSERVER_TEST_CHILD_DB"
)

func persistentOptions(t *testing.T, dbFile string) devserver.Options {
	return devserver.Options{Address: "127.0.0.1:0", DBFile: dbFile, Namespace: "tb-test", Logger: testLogger(t)}
}

func TestStatePersistsAcrossRestart(t *testing.T) {
	t.Parallel()
	dbFile := filepath.Join(t.TempDir(), "sub", "dir", "tb.db")
	createState(t, persistentOptions(t, dbFile))
	checkState(t, persistentOptions(t, dbFile))
}

// TestStatePersistsAcrossProcesses is TestStatePersistsAcrossRestart with the
// first server in a child process, as with two runs of a command.
func TestStatePersistsAcrossProcesses(t *testing.T) {
	if dbFile := os.Getenv(childDBEnv); dbFile != "" {
		createState(t, persistentOptions(t, dbFile))
		return
	}
	t.Parallel()
	dbFile := filepath.Join(t.TempDir(), "tb.db")
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestStatePersistsAcrossProcesses$", "-test.count=1")
	cmd.Env = append(os.Environ(), childDBEnv+"="+dbFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child process: %v\n%s", err, out)
	}
	checkState(t, persistentOptions(t, dbFile))
}

// createState starts a server, leaves a workflow blocked on a signal and a
// paused schedule in it, and stops the server.
func createState(t *testing.T, opts devserver.Options) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := start(t, opts)
	c := dial(t, s)
	w := startWorker(t, c)
	closeClient := sync.OnceFunc(func() { w.Stop(); c.Close() })
	defer closeClient()

	run, err := c.ExecuteWorkflow(ctx,
		client.StartWorkflowOptions{ID: persistedWorkflowID, TaskQueue: taskQueue}, awaitSignal)
	if err != nil {
		t.Fatalf("ExecuteWorkflow: %v", err)
	}
	// Wait until the worker has run the first workflow task, so the workflow
	// is really blocked on the signal rather than merely scheduled.
	eventually(t, ctx, func() (bool, string) {
		hist := c.GetWorkflowHistory(ctx, persistedWorkflowID, run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for hist.HasNext() {
			ev, err := hist.Next()
			if err != nil {
				return false, err.Error()
			}
			if ev.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED {
				return true, ""
			}
		}
		return false, "no workflow task completed yet"
	})
	sched, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{
		ID:     persistedScheduleID,
		Spec:   client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: time.Hour}}},
		Action: &client.ScheduleWorkflowAction{Workflow: greet, Args: []any{"schedule"}, TaskQueue: taskQueue},
		Paused: true,
	})
	if err != nil {
		t.Fatalf("create schedule: %v", err)
	}
	// Describe is answered by the schedule's own workflow once it has run its
	// first task. Stopping the server in the middle of that task would leave
	// it to time out (10s) after the restart, delaying the next Describe.
	if _, err := sched.Describe(ctx); err != nil {
		t.Fatalf("describe schedule: %v", err)
	}

	closeClient()
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(opts.DBFile); err != nil {
		t.Fatalf("database file: %v", err)
	}
}

// checkState starts a server on the database createState left behind, finds
// the workflow still running and the schedule still there, and signals the
// workflow to completion.
func checkState(t *testing.T, opts devserver.Options) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := start(t, opts)
	c := dial(t, s)
	defer c.Close()

	desc, err := c.DescribeWorkflowExecution(ctx, persistedWorkflowID, "")
	if err != nil {
		t.Fatalf("DescribeWorkflowExecution after restart: %v", err)
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatalf("status after restart = %v, want RUNNING", st)
	}
	sched, err := c.ScheduleClient().GetHandle(ctx, persistedScheduleID).Describe(ctx)
	if err != nil {
		t.Fatalf("describe schedule after restart: %v", err)
	}
	if !sched.Schedule.State.Paused {
		t.Errorf("schedule after restart is not paused")
	}

	w := startWorker(t, c)
	defer w.Stop()
	if err := c.SignalWorkflow(ctx, persistedWorkflowID, "", signalName, "it"); err != nil {
		t.Fatalf("SignalWorkflow: %v", err)
	}
	var got string
	if err := c.GetWorkflow(ctx, persistedWorkflowID, "").Get(ctx, &got); err != nil {
		t.Fatalf("workflow result: %v", err)
	}
	if got != "got it" {
		t.Errorf("result = %q, want %q", got, "got it")
	}
}

func TestUIServesPages(t *testing.T) {
	t.Parallel()
	uiAddr := freeAddress(t)
	s := start(t, devserver.Options{
		Address:   "127.0.0.1:0",
		Ephemeral: true,
		UIAddress: uiAddr,
		Logger:    testLogger(t),
	})
	if s.UIAddress() != uiAddr {
		t.Errorf("UIAddress() = %q, want %q", s.UIAddress(), uiAddr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	httpClient := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	defer httpClient.CloseIdleConnections()
	var body string
	eventually(t, ctx, func() (bool, string) {
		status, b, err := get(ctx, httpClient, "http://"+uiAddr+"/")
		if err != nil {
			return false, err.Error()
		}
		body = b
		return status == http.StatusOK, "status " + http.StatusText(status)
	})
	if !strings.Contains(strings.ToLower(body), "<!doctype html") || !strings.Contains(body, "/_app/") {
		t.Errorf("GET / did not return the UI's index page: %.200q", body)
	}
	// The page's assets are served too.
	status, _, err := get(ctx, httpClient, "http://"+uiAddr+"/_app/version.json")
	if err != nil || status != http.StatusOK {
		t.Errorf("GET /_app/version.json: status %d, err %v", status, err)
	}
	// The UI reaches the frontend through its API proxy.
	status, b, err := get(ctx, httpClient, "http://"+uiAddr+"/api/v1/namespaces/"+s.Namespace())
	if err != nil || status != http.StatusOK {
		t.Errorf("GET /api/v1/namespaces/%s: status %d, err %v, body %.200q", s.Namespace(), status, err, b)
	}
}

// freeAddress returns 127.0.0.1:port for a port nothing listens on.
func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func get(ctx context.Context, c *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// eventually polls cond until it holds, failing the test with cond's last
// explanation when ctx ends first.
func eventually(t *testing.T, ctx context.Context, cond func() (ok bool, why string)) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("condition not met: %s (%v)", why, ctx.Err())
		case <-tick.C:
		}
	}
}

package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// helperEnv, when set, makes TestHelperWorkerProcess run an app worker with
// the configuration (JSON helperConfig) it holds, until its standard input closes.
const helperEnv = "TB_RELIABILITY_WORKER"

// Names the helper worker registers.
const (
	crashWorkflowType = "ReliabilityCallOnce"
	crashActivityType = "ReliabilityCallAPI"
)

// helperConfig tells a helper worker process what to run.
type helperConfig struct {
	Address   string `json:"address"`
	Namespace string `json:"namespace"`
	Bucket    string `json:"bucket"`
	// Then, when set, the activity also draws from this bucket, after Bucket.
	Then      string `json:"then,omitempty"`
	TaskQueue string `json:"taskQueue"`
	Slots     int    `json:"slots"`
	// StartsFile receives one line per acquire update that granted tokens to
	// this process, and one per guarded activity body run.
	StartsFile string `json:"startsFile"`
	// HoldAfter > 0: once this process has been granted at least HoldAfter
	// tokens of Bucket, the acquire update that crossed it is completed by the
	// bucket but its answer is never handed to the waiting activities; a line
	// in HoldFile says so, and the process waits to be killed.
	HoldAfter int64  `json:"holdAfter,omitempty"`
	HoldFile  string `json:"holdFile,omitempty"`
}

// crashWorkflow runs the guarded activity with the retry policy tb
// recommends: unlimited attempts, bounded by ScheduleToClose. A short
// StartToClose retries an attempt lost with its worker quickly.
func crashWorkflow(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		ScheduleToCloseTimeout: 3 * time.Minute,
		StartToCloseTimeout:    4 * time.Second,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: 500 * time.Millisecond, MaximumAttempts: 0},
	})
	return workflow.ExecuteActivity(ctx, crashActivityType).Get(ctx, nil)
}

// TestHelperWorkerProcess is not a test: it is the app worker that
// TestWorkerCrashMidAcquire runs in child processes, and returns at once
// unless helperEnv is set.
func TestHelperWorkerProcess(t *testing.T) {
	raw := os.Getenv(helperEnv)
	if raw == "" {
		return
	}
	var cfg helperConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the parent closes our standard input to stop us, or by dying
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	c, err := client.Dial(client.Options{
		HostPort:  cfg.Address,
		Namespace: cfg.Namespace,
		Logger:    log.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	starts, err := os.OpenFile(cfg.StartsFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer starts.Close()
	acq, err := interceptor.NewAcquirer(&holdingUpdater{c: c, cfg: cfg, stop: ctx.Done(), log: starts}, interceptor.AcquirerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	guards := []bucket.Guard{{Bucket: cfg.Bucket, Cost: 1}}
	if cfg.Then != "" {
		guards = append(guards, bucket.Guard{Bucket: cfg.Then, Cost: 1})
	}
	ic, err := interceptor.New(interceptor.Options{
		Guards:  map[string][]bucket.Guard{crashActivityType: guards},
		Limiter: acq,
	})
	if err != nil {
		t.Fatal(err)
	}
	w := worker.New(c, cfg.TaskQueue, worker.Options{
		MaxConcurrentActivityExecutionSize: cfg.Slots,
		Interceptors:                       []temporalinterceptor.WorkerInterceptor{ic},
	})
	w.RegisterWorkflowWithOptions(crashWorkflow, workflow.RegisterOptions{Name: crashWorkflowType})
	pid := os.Getpid()
	w.RegisterActivityWithOptions(func(ctx context.Context) error {
		now := time.Now()
		info := activity.GetInfo(ctx)
		grant, ok := interceptor.GrantFromContext(ctx)
		if n := len(interceptor.GrantsFromContext(ctx)); n != len(guards) {
			ok = false
		}
		if !ok {
			fmt.Fprintf(starts, "nogrant - %s %d %s %d\n", now.Format(time.RFC3339Nano), pid, info.WorkflowExecution.ID, info.Attempt)
			return temporal.NewNonRetryableApplicationError("ran without a grant", "NoGrant", nil)
		}
		// One small O_APPEND write per line: lines from several processes never interleave.
		_, err := fmt.Fprintf(starts, "start %s %s %d %s %d\n", grant.LastRefill.Format(time.RFC3339Nano),
			now.Format(time.RFC3339Nano), pid, info.WorkflowExecution.ID, info.Attempt)
		return err
	}, activity.RegisterOptions{Name: crashActivityType})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	<-ctx.Done()
	w.Stop()
}

// holdingUpdater passes acquire updates to Temporal and logs the tokens each
// one granted before the callers hear of them; see helperConfig.HoldAfter.
type holdingUpdater struct {
	c    client.Client
	cfg  helperConfig
	stop <-chan struct{}
	log  io.Writer

	mu      sync.Mutex
	granted int64
	held    bool
}

func (u *holdingUpdater) SignalWorkflow(ctx context.Context, workflowID, runID, signalName string, arg any) error {
	return u.c.SignalWorkflow(ctx, workflowID, runID, signalName, arg)
}

func (u *holdingUpdater) UpdateWorkflow(ctx context.Context, o client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	h, err := u.c.UpdateWorkflow(ctx, o)
	if err != nil {
		return nil, err
	}
	return &holdingHandle{WorkflowUpdateHandle: h, u: u, bucket: o.WorkflowID == workflows.BucketID(u.cfg.Bucket)}, nil
}

type holdingHandle struct {
	client.WorkflowUpdateHandle
	u      *holdingUpdater
	bucket bool // an update of cfg.Bucket, whose grants count towards HoldAfter
}

func (h *holdingHandle) Get(ctx context.Context, v any) error {
	if err := h.WorkflowUpdateHandle.Get(ctx, v); err != nil {
		return err
	}
	resp, ok := v.(*workflows.AcquireResponse)
	if !ok {
		return nil
	}
	var n int64
	for _, r := range resp.Results {
		if r.Granted {
			n++
		}
	}
	u := h.u
	if !h.bucket {
		return nil
	}
	if n > 0 {
		if _, err := fmt.Fprintf(u.log, "grant %d %d\n", n, os.Getpid()); err != nil {
			return err
		}
	}
	if u.cfg.HoldAfter <= 0 {
		return nil
	}
	u.mu.Lock()
	u.granted += n
	hold := n > 0 && !u.held && u.granted >= u.cfg.HoldAfter
	u.held = u.held || hold
	u.mu.Unlock()
	if !hold {
		return nil
	}
	line := fmt.Sprintf("held %d %d\n", n, os.Getpid())
	if err := os.WriteFile(u.cfg.HoldFile, []byte(line), 0o644); err != nil {
		return err
	}
	<-u.stop // the bucket took these tokens; their activities never hear of it
	return errors.New("stopped while holding a grant")
}

// helperProc is a running helper worker process.
type helperProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    string // file holding its output
	done   chan struct{}
	err    error
	killed bool
}

// startHelper starts a helper worker process; it is stopped when the test ends.
func startHelper(t *testing.T, name string, cfg helperConfig) *helperProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &helperProc{out: filepath.Join(t.TempDir(), name+".out"), done: make(chan struct{})}
	out, err := os.Create(p.out)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(exe, "-test.run=^TestHelperWorkerProcess$", "-test.count=1", "-test.v")
	p.cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		out.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.done:
			// A worker stopped this way exits 0, unless its test failed (a data race, with -race).
			if !p.killed && p.err != nil {
				t.Errorf("%s: %v", name, p.err)
			}
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.out)
			t.Logf("%s (pid %d) output:\n%s", name, p.cmd.Process.Pid, tail(string(b), 3000))
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to end.
func (p *helperProc) kill(t *testing.T) {
	t.Helper()
	p.killed = true
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// bodyRun is one guarded activity body run, as a helper process recorded it.
type bodyRun struct {
	refill   time.Time // the refill the grant drew on
	at       time.Time
	pid      int
	workflow string
	attempt  int
}

// readRuns parses a StartsFile: the body runs, the lines of bodies that ran
// without a grant, and the tokens granted to each process.
func readRuns(t *testing.T, path string) (runs []bodyRun, ungranted []string, granted map[int]int64) {
	t.Helper()
	f, err := os.Open(path)
	granted = map[int]int64{}
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, granted
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 3 && fields[0] == "grant" {
			n, err1 := strconv.ParseInt(fields[1], 10, 64)
			pid, err2 := strconv.Atoi(fields[2])
			if err := errors.Join(err1, err2); err != nil {
				t.Fatalf("%s: line %q: %v", path, line, err)
			}
			granted[pid] += n
			continue
		}
		if len(fields) != 6 {
			t.Fatalf("%s: malformed line %q", path, line)
		}
		if fields[0] == "nogrant" {
			ungranted = append(ungranted, line)
			continue
		}
		var r bodyRun
		var errs [4]error
		r.refill, errs[0] = time.Parse(time.RFC3339Nano, fields[1])
		r.at, errs[1] = time.Parse(time.RFC3339Nano, fields[2])
		r.pid, errs[2] = strconv.Atoi(fields[3])
		r.workflow = fields[4]
		r.attempt, errs[3] = strconv.Atoi(fields[5])
		if err := errors.Join(errs[:]...); err != nil {
			t.Fatalf("%s: line %q: %v", path, line, err)
		}
		runs = append(runs, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return runs, ungranted, granted
}

// checkWindows fails the test when more grants drew on one refill than the
// bucket can hold, and returns the grants per refill window.
func checkWindows(t *testing.T, refills []time.Time, maximum int64) map[time.Time]int64 {
	t.Helper()
	per := map[time.Time]int64{}
	for _, r := range refills {
		per[r]++
	}
	for r, n := range per {
		if n > maximum {
			t.Errorf("%d grants drew on the refill applied at %s; the bucket holds at most %d", n, r.Format("15:04:05.000"), maximum)
		}
	}
	return per
}

// errorClass sorts an acquire error for counting.
func errorClass(err error) string {
	var re *serviceerror.ResourceExhausted
	if errors.As(err, &re) || strings.Contains(strings.ToLower(err.Error()), "resource exhausted") || strings.Contains(err.Error(), "ResourceExhausted") {
		return "ResourceExhausted"
	}
	var appErr *temporal.ApplicationError
	switch {
	case errors.As(err, &appErr):
		return "ApplicationError:" + appErr.Type()
	case errors.Is(err, context.DeadlineExceeded):
		return "DeadlineExceeded"
	case errors.Is(err, context.Canceled):
		return "Canceled"
	}
	var dl *serviceerror.DeadlineExceeded
	if errors.As(err, &dl) {
		return "DeadlineExceeded"
	}
	return fmt.Sprintf("%T", errors.Unwrap(err))
}

// historyLength returns the number of events in the current run of a workflow.
func historyLength(ctx context.Context, c client.Client, id string) (int64, string, error) {
	d, err := c.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return 0, "", err
	}
	info := d.GetWorkflowExecutionInfo()
	return info.GetHistoryLength(), info.GetExecution().GetRunId(), nil
}

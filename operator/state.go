package operator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbucket/tb/workflows"
)

// queryTimeout bounds a state query whose context has no deadline. A bucket
// a worker runs answers in milliseconds; one still silent after this has no
// worker.
const queryTimeout = 5 * time.Second

// NotRunningError reports a bucket whose workflow is not running: one never
// created (or closed longer ago than the namespace keeps workflows), one
// retired by Apply with Options.Retire, or one terminated, failed, timed out
// or canceled. Such a bucket grants nothing and takes no refill.
type NotRunningError struct {
	// Bucket is the bucket's name.
	Bucket string
	// Status is how the bucket's latest run closed:
	// WORKFLOW_EXECUTION_STATUS_COMPLETED for a retired bucket (only a retire
	// completes one), WORKFLOW_EXECUTION_STATUS_TERMINATED for one terminated,
	// and so on; WORKFLOW_EXECUTION_STATUS_UNSPECIFIED when the namespace holds
	// no workflow of the bucket.
	Status enumspb.WorkflowExecutionStatus
	// Closed is when that run closed; zero when unknown, or when there is no run.
	Closed time.Time
}

// Retired reports whether the bucket was retired: its workflow completed,
// which only Apply with Options.Retire (or tb sync-schedules --retire) does.
func (e *NotRunningError) Retired() bool {
	return e.Status == enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED
}

func (e *NotRunningError) Error() string {
	at := ""
	if !e.Closed.IsZero() {
		at = " at " + e.Closed.UTC().Format(time.RFC3339)
	}
	switch e.Status {
	case enumspb.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED:
		return fmt.Sprintf("bucket %q is not running: it has no workflow", e.Bucket)
	case enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED:
		return fmt.Sprintf("bucket %q is not running: retired (completed%s)", e.Bucket, at)
	}
	// WORKFLOW_EXECUTION_STATUS_TIMED_OUT → "timed out"
	how := strings.TrimPrefix(enumspb.WorkflowExecutionStatus_name[int32(e.Status)], "WORKFLOW_EXECUTION_STATUS_")
	how = strings.ReplaceAll(strings.ToLower(how), "_", " ")
	if how == "" {
		how = e.Status.String()
	}
	return fmt.Sprintf("bucket %q is not running: %s%s", e.Bucket, how, at)
}

// NoAnswerError reports a bucket workflow that did not answer in time: no
// worker runs it (none polls its task queue, or none registered tb's
// workflows), or its workers are stuck. The bucket answers once a worker
// takes it up; until then it grants nothing.
type NoAnswerError struct {
	// Bucket is the bucket's name.
	Bucket string
	// Err is the deadline that passed: the context's, or one gRPC or the server reported.
	Err error
}

func (e *NoAnswerError) Error() string {
	return fmt.Sprintf("bucket %q: no answer: is a tb worker running on its task queue?", e.Bucket)
}

// Unwrap returns the deadline error, so errors.Is(err, context.DeadlineExceeded) may hold.
func (e *NoAnswerError) Unwrap() error { return e.Err }

// State returns the state of the named bucket, as its running workflow
// answers the state query: tokens, spec, next refill and counters. It waits
// until ctx is done or, if ctx has no deadline, at most 5 s.
//
// A keyed bucket's state sums its shards': its counters, its Keys, and its
// Emptiest keys across every shard; its Tokens are 0 (each key holds its own:
// see KeyState) and its NextRefill is the soonest of its shards'.
//
// A bucket that is not running is reported as a *NotRunningError, which
// says whether it was never created, retired or terminated, and when it
// closed; this needs no worker. A bucket no worker answers for in time is
// reported as a *NoAnswerError. Every other error names the bucket and wraps
// the client's.
func State(ctx context.Context, c client.Client, name string) (workflows.Status, error) {
	if c == nil {
		return workflows.Status{}, fmt.Errorf("bucket %q: %w", name, errNoClient)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, queryTimeout)
		defer cancel()
	}
	st, err := query(ctx, c, name, workflows.BucketID(name))
	var none *NotRunningError
	if !errors.As(err, &none) || none.Status != enumspb.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED {
		return st, err
	}
	// No workflow of that ID: perhaps the bucket is keyed.
	first, ferr := query(ctx, c, name, workflows.ShardID(name, 0))
	if errors.As(ferr, &none) && none.Status == enumspb.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED {
		return st, err
	}
	if ferr != nil || !first.Spec.Keyed {
		return first, ferr
	}
	n := first.Spec.ShardCount()
	shards := make([]workflows.Status, n)
	errs := make([]error, n)
	shards[0] = first
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Go(func() { shards[i], errs[i] = query(ctx, c, name, workflows.ShardID(name, i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return workflows.Status{}, fmt.Errorf("shard %d of %d: %w", i, n, err)
		}
	}
	return sumShards(shards), nil
}

// sumShards is the state of a keyed bucket whose shards answered shards.
func sumShards(shards []workflows.Status) workflows.Status {
	sum := workflows.Status{Spec: shards[0].Spec}
	sum.Created = shards[0].Created
	for _, sh := range shards {
		sum.Granted = addSat(sum.Granted, sh.Granted)
		sum.Denied = addSat(sum.Denied, sh.Denied)
		sum.Ignored = addSat(sum.Ignored, sh.Ignored)
		sum.Refunded = addSat(sum.Refunded, sh.Refunded)
		sum.Charged = addSat(sum.Charged, sh.Charged)
		sum.Unrefunded = addSat(sum.Unrefunded, sh.Unrefunded)
		sum.Pauses = addSat(sum.Pauses, sh.Pauses)
		sum.Calibrations = addSat(sum.Calibrations, sh.Calibrations)
		sum.WouldDeny = addSat(sum.WouldDeny, sh.WouldDeny)
		sum.Run += sh.Run
		sum.Updates += sh.Updates
		sum.Keys += sh.Keys
		sum.Emptiest = append(sum.Emptiest, sh.Emptiest...)
		if sh.LastTick.After(sum.LastTick) {
			sum.LastTick = sh.LastTick
		}
		if sh.LastRefill.After(sum.LastRefill) {
			sum.LastRefill = sh.LastRefill
		}
		if sh.PausedUntil.After(sum.PausedUntil) {
			sum.PausedUntil = sh.PausedUntil
		}
		if !sh.NextRefill.IsZero() && (sum.NextRefill.IsZero() || sh.NextRefill.Before(sum.NextRefill)) {
			sum.NextRefill = sh.NextRefill
		}
		if sh.Created.Before(sum.Created) {
			sum.Created = sh.Created
		}
	}
	slices.SortStableFunc(sum.Emptiest, func(a, b workflows.KeyStatus) int {
		return cmp.Or(cmp.Compare(a.Tokens, b.Tokens), strings.Compare(a.Key, b.Key))
	})
	sum.Emptiest = sum.Emptiest[:min(len(sum.Emptiest), emptiest)]
	return sum
}

// emptiest is how many of its emptiest keys a keyed bucket's state lists.
const emptiest = 5

// addSat adds counters, saturating at math.MaxInt64 as the bucket's do.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// query asks the bucket workflow id, a workflow of the named bucket, for its state.
func query(ctx context.Context, c client.Client, name, id string) (workflows.Status, error) {
	// A run that has just continued as new has a successor: ask again. A
	// closed run is not queried (Temporal would answer from its last state, as
	// if it still ran, and only with a worker): it is described instead.
	for range 3 {
		resp, err := c.QueryWorkflowWithOptions(ctx, &client.QueryWorkflowWithOptionsRequest{
			WorkflowID:           id,
			QueryType:            workflows.StateQuery,
			QueryRejectCondition: enumspb.QUERY_REJECT_CONDITION_NOT_OPEN,
		})
		if err != nil {
			return workflows.Status{}, queryError(name, err)
		}
		if rejected := resp.QueryRejected; rejected != nil {
			if rejected.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW {
				continue
			}
			return workflows.Status{}, notRunning(ctx, c, name, id, rejected.GetStatus())
		}
		var st workflows.Status
		if err := resp.QueryResult.Get(&st); err != nil {
			return workflows.Status{}, fmt.Errorf("bucket %q: reading its state: %w", name, err)
		}
		return st, nil
	}
	return workflows.Status{}, fmt.Errorf("bucket %q: its workflow continued as new three times while tb asked; try again", name)
}

// queryError classifies an error of the state query. A query nobody answers
// ends in a deadline: the context's, or one reported by gRPC or the server,
// which errors.Is(context.DeadlineExceeded) does not match.
func queryError(name string, err error) error {
	var (
		notFound *serviceerror.NotFound
		deadline *serviceerror.DeadlineExceeded
	)
	switch {
	case errors.As(err, &notFound):
		return &NotRunningError{Bucket: name}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &deadline), status.Code(err) == codes.DeadlineExceeded:
		return &NoAnswerError{Bucket: name, Err: err}
	}
	return fmt.Errorf("bucket %q: %w", name, err)
}

// notRunning describes a bucket whose workflow id's latest run closed as how, with the
// time it closed when the server tells. With how unspecified (a signal found
// no open run), the server tells how too, if it knows of a run.
func notRunning(ctx context.Context, c client.Client, name, id string, how enumspb.WorkflowExecutionStatus) *NotRunningError {
	e := &NotRunningError{Bucket: name, Status: how}
	desc, err := c.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return e
	}
	info := desc.GetWorkflowExecutionInfo()
	if how == enumspb.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED && info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		e.Status = info.GetStatus()
	}
	// A new run may have started meanwhile: its close time is not this one's.
	if info.GetStatus() == e.Status && info.GetCloseTime() != nil {
		e.Closed = info.GetCloseTime().AsTime()
	}
	return e
}

// A StateResult is one bucket's answer to States.
type StateResult struct {
	// Bucket is the bucket's name.
	Bucket string
	// Status is the bucket's state; the zero value when Err is set.
	Status workflows.Status
	// Err is what State returned for the bucket.
	Err error
}

// States reads the state of every named bucket, as State does, all at once.
// It returns one StateResult per name, in the order given.
func States(ctx context.Context, c client.Client, names []string) []StateResult {
	results := make([]StateResult, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			st, err := State(ctx, c, name)
			results[i] = StateResult{Bucket: name, Status: st, Err: err}
		})
	}
	wg.Wait()
	return results
}

// Running returns the names of the buckets whose workflows run in the
// client's namespace, sorted, as its visibility store lists them: it may
// lag a bucket's start or end by a moment.
func Running(ctx context.Context, c client.Client) ([]string, error) {
	if c == nil {
		return nil, errNoClient
	}
	runs, err := running(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("listing bucket workflows: %w", err)
	}
	names := make([]string, 0, len(runs))
	for name := range runs {
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}

// running lists the running bucket workflows, page after page: the IDs of
// each bucket's (a keyed bucket has one per shard), by bucket name.
func running(ctx context.Context, c client.Client) (map[string][]string, error) {
	query := fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", workflows.BucketWorkflowType)
	runs := map[string][]string{}
	var token []byte
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query, PageSize: 1000, NextPageToken: token})
		if err != nil {
			return nil, err
		}
		for _, e := range resp.GetExecutions() {
			id := e.GetExecution().GetWorkflowId()
			if name, ok := strings.CutPrefix(id, workflows.BucketIDPrefix); ok {
				// A shard's ID is its bucket's, then "-" and its index: no name holds a "-".
				name, _, _ = strings.Cut(name, "-")
				runs[name] = append(runs[name], id)
			}
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	return runs, nil
}

package operator

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// Refill Schedule policies: every tick starts its own refill workflow (one
// slow refill must not skip the next), ticks missed during an outage are
// caught up for a minute, and a refill that cannot reach its bucket gives up
// after refillTimeout.
const (
	catchupWindow = time.Minute
	refillTimeout = 10 * time.Minute
	// reconfigureTimeout bounds the wait for a running bucket to take a new spec.
	reconfigureTimeout = 30 * time.Second
)

// Options configure Plan and Apply. The zero value is ready to use.
type Options struct {
	// TaskQueue is where refill and bucket workflows run when their spec names
	// no task queue. Default workflows.TaskQueue ("tb").
	TaskQueue string
	// Retire ends the bucket workflows of buckets no longer in the config,
	// tokens and all. Default false: their refill Schedules are deleted and
	// their workflows keep running, reported Kept, until an Apply with Retire.
	Retire bool
	// DeleteAll lets a config with no buckets delete every refill Schedule tb
	// owns (and, with Retire, end every bucket workflow). Default false: such
	// a config is taken for a mistake, and Plan and Apply return an
	// *EmptyConfigError.
	DeleteAll bool
	// Concurrency bounds the buckets handled at once. Default 8.
	Concurrency int
	// DataConverter reads the memos, Schedule arguments and workflow inputs tb
	// wrote: give the one the client uses (with its codec, if any). Default
	// converter.GetDefaultDataConverter().
	DataConverter converter.DataConverter
}

// EmptyConfigError is the refusal of a config with no buckets, which would
// delete everything tb owns in the namespace, when Options.DeleteAll is not set.
type EmptyConfigError struct {
	// Buckets lists, sorted, the buckets tb owns that the sync would remove.
	Buckets []string
}

func (e *EmptyConfigError) Error() string {
	return fmt.Sprintf("the config declares no buckets: syncing would remove the %d buckets tb owns (%s); set DeleteAll to do so",
		len(e.Buckets), strings.Join(e.Buckets, ", "))
}

// An Action is what Apply did, or what Plan says Apply would do, to a
// bucket's refill Schedule or to its workflow.
type Action string

const (
	// Unchanged: it already matched the config.
	Unchanged Action = "unchanged"
	// Created: it did not exist, and was created.
	Created Action = "created"
	// Updated: it differed from the config, and was changed to match; a
	// bucket workflow keeps its tokens (capped at a lowered maximum).
	Updated Action = "updated"
	// Deleted: the refill Schedule of a bucket no longer in the config was deleted.
	Deleted Action = "deleted"
	// Retired: the workflow of a bucket no longer in the config was ended (Options.Retire).
	Retired Action = "retired"
	// Kept: the workflow of a bucket no longer in the config was left running (no Options.Retire).
	Kept Action = "kept"
)

// A Change reports what Apply did, or what Plan says it would do, to one bucket.
type Change struct {
	// Bucket is the bucket's name.
	Bucket string `json:"bucket"`
	// Schedule and Workflow say what was done to the bucket's refill Schedule
	// and to its workflow: "" for nothing (it has none, or a step failed first).
	Schedule Action `json:"schedule,omitempty"`
	Workflow Action `json:"workflow,omitempty"`
	// Details says what differs, e.g. "amount 5 → 10".
	Details string `json:"details,omitempty"`
	// Warnings are problems that did not stop the change, e.g. a task queue no worker polls.
	Warnings []string `json:"warnings,omitempty"`
	// Err is why the bucket could not be brought in line with the config; nil if it was.
	Err error `json:"-"`
}

// Plan reports what Apply would do with the same arguments, changing
// nothing: its Changes say Created, Updated, Deleted or Retired of what Apply
// would create, update, delete or retire, and carry the warnings and the
// failures Apply would meet reading the namespace (a Schedule tb did not
// create, say). It returns what Apply returns for an invalid or empty config.
func Plan(ctx context.Context, c client.Client, cfg *bucket.Config, opts Options) ([]Change, error) {
	return run(ctx, c, cfg, opts, true)
}

// Apply makes the namespace's refill Schedules and bucket workflows match
// cfg, as tb sync-schedules does; run it at deploy time, after the tb
// workers. It creates what is missing, updates what changed (a bucket keeps
// its tokens, and moves to the task queue its spec names), and deletes the
// refill Schedules tb owns whose bucket left cfg (with Options.Retire, it
// ends their workflows first). It leaves alone every Schedule it did not
// create. Running it again changes nothing, and two Applys at once both
// succeed. A config with no buckets removes anything only with
// Options.DeleteAll.
//
// Creating a bucket needs no worker. Updating, moving or retiring a running
// one needs a worker on the task queue it runs on now: without one, Apply
// fails for that bucket after 30 s, naming the queue.
//
// cfg is checked first, as bucket.Load checks a file: an invalid spec (a
// bucket.ValidationError naming each bucket and field), a name declared twice
// or an invalid Options.TaskQueue changes nothing. Otherwise Apply returns one
// Change per bucket, sorted by name, whatever failed; the error joins every
// failure, each naming its bucket.
func Apply(ctx context.Context, c client.Client, cfg *bucket.Config, opts Options) ([]Change, error) {
	return run(ctx, c, cfg, opts, false)
}

// run is Apply, or with dryRun Plan.
func run(ctx context.Context, c client.Client, cfg *bucket.Config, opts Options, dryRun bool) ([]Change, error) {
	if err := check(c, cfg, opts); err != nil {
		return nil, err
	}
	if opts.TaskQueue == "" {
		opts.TaskQueue = workflows.TaskQueue
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
	}
	if opts.DataConverter == nil {
		opts.DataConverter = converter.GetDefaultDataConverter()
	}
	s := &syncer{c: c, opts: opts, dryRun: dryRun, unpolledQueues: map[string]bool{}}

	want := map[string]bool{}
	jobs := make([]func() Change, 0, len(cfg.Buckets))
	for _, spec := range cfg.Buckets {
		want[spec.Name] = true
		jobs = append(jobs, func() Change { return s.apply(ctx, spec) })
	}
	gone, err := s.removed(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("listing the Schedules and bucket workflows tb owns: %w", err)
	}
	if len(cfg.Buckets) == 0 && !opts.DeleteAll {
		var doomed []string
		for _, r := range gone {
			if r.schedule || opts.Retire {
				doomed = append(doomed, r.name)
			}
		}
		if len(doomed) > 0 {
			return nil, &EmptyConfigError{Buckets: doomed}
		}
	}
	for _, r := range gone {
		jobs = append(jobs, func() Change { return s.remove(ctx, r) })
	}

	changes := make([]Change, len(jobs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, opts.Concurrency)
	for i, job := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			changes[i] = job()
			<-sem
		}()
	}
	wg.Wait()

	// A bucket listed as running that had ended by the time it was looked at leaves nothing to report.
	changes = slices.DeleteFunc(changes, func(ch Change) bool {
		return ch.Schedule == "" && ch.Workflow == "" && ch.Err == nil && len(ch.Warnings) == 0
	})
	sort.Slice(changes, func(i, j int) bool { return changes[i].Bucket < changes[j].Bucket })
	var errs []error
	for _, ch := range changes {
		if ch.Err != nil {
			errs = append(errs, fmt.Errorf("bucket %q: %w", ch.Bucket, ch.Err))
		}
	}
	return changes, errors.Join(errs...)
}

type syncer struct {
	c      client.Client
	opts   Options
	dryRun bool // for Plan: read everything, change nothing

	mu             sync.Mutex
	unpolledQueues map[string]bool // task queue → whether the server says no worker polls it
}

// apply brings one bucket's workflow and Schedule in line with spec.
//
// Both steps read before they write, so a step that failed for want of time
// (a busy server) is simply tried again; what it had done is then found done.
func (s *syncer) apply(ctx context.Context, spec bucket.Spec) Change {
	// The workflow and the Schedule are given the queue itself, never "": a
	// bucket moves to the queue its spec names, so it must always name one,
	// or a bucket whose task_queue was removed would stay where it was.
	spec.TaskQueue = s.taskQueue(spec)
	ch := Change{Bucket: spec.Name}
	if s.unpolled(ctx, spec.TaskQueue) {
		ch.Warnings = append(ch.Warnings, fmt.Sprintf("no worker polls task queue %q: the bucket will not answer until a tb worker runs there", spec.TaskQueue))
	}
	if err := s.keying(ctx, spec); err != nil {
		ch.Err = err
		return ch
	}
	ids, ins := []string{workflows.BucketID(spec.Name)}, []workflows.BucketInput{{Spec: spec}}
	if n := spec.ShardCount(); n > 0 {
		ids, ins = make([]string, n), make([]workflows.BucketInput, n)
		for i := range n {
			ids[i], ins[i] = workflows.ShardID(spec.Name, i), workflows.BucketInput{Spec: spec, Shard: i}
		}
	}
	for i, id := range ids {
		wf, details, err := retry(ctx, func() (Action, string, error) { return s.ensureWorkflow(ctx, id, ins[i]) })
		if ch.Workflow == "" || ch.Workflow == Unchanged || wf == Created {
			ch.Workflow = wf // a keyed bucket's shards: created if one was, else updated if one was
		}
		if ch.Details == "" {
			ch.Details = details
		}
		if err != nil {
			if len(ids) > 1 {
				err = fmt.Errorf("shard %d of %d: %w", i, len(ids), err)
			}
			ch.Err = fmt.Errorf("bucket workflow: %w", err)
			return ch
		}
	}
	sched, details, err := retry(ctx, func() (Action, string, error) { return s.ensureSchedule(ctx, spec) })
	ch.Schedule = sched
	if ch.Details == "" {
		ch.Details = details
	}
	if err != nil {
		ch.Err = fmt.Errorf("refill Schedule: %w", err)
	}
	return ch
}

// retry runs step until it succeeds, fails for good, or has failed for want
// of time three times. An action a failed try was taking is reported if a
// later try finds it done.
func retry(ctx context.Context, step func() (Action, string, error)) (Action, string, error) {
	var tried Action
	for attempt := 1; ; attempt++ {
		action, details, err := step()
		if err == nil {
			if action == Unchanged && tried != "" {
				action = tried
			}
			return action, details, nil
		}
		if action != "" {
			tried = action
		}
		if attempt == 3 || ctx.Err() != nil || !transient(err) {
			return "", details, err
		}
		select {
		case <-ctx.Done():
			return "", details, err
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
}

// transient reports whether err says the server was too busy or too slow to answer.
func transient(err error) bool {
	var (
		deadline    *serviceerror.DeadlineExceeded
		unavailable *serviceerror.Unavailable
		exhausted   *serviceerror.ResourceExhausted
		canceled    *serviceerror.Canceled
	)
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &deadline) ||
		errors.As(err, &unavailable) || errors.As(err, &exhausted) || errors.As(err, &canceled)
}

// taskQueue is where a bucket's workflows run.
func (s *syncer) taskQueue(spec bucket.Spec) string {
	if spec.TaskQueue != "" {
		return spec.TaskQueue
	}
	return s.opts.TaskQueue
}

// keying refuses a spec that would change in place how a running bucket
// holds its tokens: from unkeyed to keyed or back, or its shard count. Its
// tokens cannot follow (a key's shard follows from the shard count), so the
// bucket must be retired and declared again, or renamed.
func (s *syncer) keying(ctx context.Context, spec bucket.Spec) error {
	var (
		want = spec.ShardCount()
		have = -1 // running shards; 0 when it runs unkeyed
	)
	if running, _, err := s.workflowRunning(ctx, workflows.BucketID(spec.Name)); err != nil {
		return fmt.Errorf("bucket workflow: %w", err)
	} else if running {
		have = 0
	}
	desc, err := s.c.DescribeWorkflowExecution(ctx, workflows.ShardID(spec.Name, 0), "")
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound):
	case err != nil:
		return fmt.Errorf("bucket workflow: %w", err)
	case desc.WorkflowExecutionInfo.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
		var current bucket.Spec
		if err := s.decodeMemo(desc.WorkflowExecutionInfo.GetMemo(), workflows.SpecMemo, &current); err != nil {
			return fmt.Errorf("bucket workflow: %w", err)
		}
		have = current.ShardCount()
	}
	if have < 0 || have == want {
		return nil
	}
	describe := func(n int) string {
		if n == 0 {
			return "unkeyed"
		}
		return fmt.Sprintf("keyed with %d shards", n)
	}
	return fmt.Errorf("it runs %s and the config makes it %s: a bucket cannot change that in place (a key's shard follows from the shard count, and tokens cannot follow the key): give it a new name, or remove it, sync with --retire, and declare it again",
		describe(have), describe(want))
}

// ensureWorkflow starts bucket workflow id with input in, or reconfigures it
// when its spec differs from the one in its memo, or its task queue from the
// one it runs on; reconfiguring keeps its tokens. in.Spec names its task queue.
func (s *syncer) ensureWorkflow(ctx context.Context, id string, in workflows.BucketInput) (Action, string, error) {
	spec := in.Spec
	var (
		restarted bool   // a stranded run was restarted on spec's task queue
		details   string // what differed when first read
	)
	// Each pass reads the workflow afresh: after another sync started it, or
	// after a stranded run was restarted.
	for pass := 1; ; pass++ {
		desc, err := s.c.DescribeWorkflowExecution(ctx, id, "")
		var notFound *serviceerror.NotFound
		switch {
		case errors.As(err, &notFound):
		case err != nil:
			return "", details, err
		case desc.WorkflowExecutionInfo.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED && !restarted && !s.dryRun:
			// A sync that ended a stranded run and failed before starting its
			// successor: start it now, from that run's input, not afresh.
			info := desc.WorkflowExecutionInfo
			ok, err := s.rescued(ctx, id, info.GetExecution().GetRunId())
			if err != nil {
				return "", details, fmt.Errorf("reading its ended run: %w", err)
			}
			if ok {
				if err := s.restart(ctx, id, spec, info.GetTaskQueue(), info.GetExecution().GetRunId()); err != nil {
					return Updated, details, err
				}
				restarted = true
				details = fmt.Sprintf("restarted on task queue %s from its run on %s, ended by an earlier sync", spec.TaskQueue, info.GetTaskQueue())
				continue
			}
		case desc.WorkflowExecutionInfo.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
			info := desc.WorkflowExecutionInfo
			var current bucket.Spec
			if err := s.decodeMemo(info.GetMemo(), workflows.SpecMemo, &current); err != nil {
				return "", details, err
			}
			// Where it runs is what counts: a bucket an older tb started has "" in its memo.
			current.TaskQueue = info.GetTaskQueue()
			if sameSpec(current, spec) {
				if restarted {
					return Updated, details, nil
				}
				return Unchanged, "", nil
			}
			if details == "" {
				details = diff(current, spec)
			}
			if s.dryRun {
				return Updated, details, nil
			}
			if current.TaskQueue != spec.TaskQueue && !restarted && s.unpolled(ctx, current.TaskQueue) {
				if err := s.rescue(ctx, spec, info); err != nil {
					return Updated, details, err
				}
				restarted = true
				details += fmt.Sprintf(" (restarted: its run on %s, which no worker polls, had not started)", current.TaskQueue)
				continue
			}
			return Updated, details, s.configure(ctx, id, spec, current.TaskQueue)
		}
		if s.dryRun {
			return Created, "", nil
		}
		err = s.start(ctx, in)
		var started *serviceerror.WorkflowExecutionAlreadyStarted
		if errors.As(err, &started) && pass < 3 {
			continue // another sync, or a refill, started it first: compare with that
		}
		if err != nil {
			return Created, "", fmt.Errorf("starting: %w", err)
		}
		if restarted {
			return Updated, details, nil
		}
		return Created, "", nil
	}
}

// start starts a bucket workflow with in, on the task queue its spec names.
// It fails with *serviceerror.WorkflowExecutionAlreadyStarted if one runs.
func (s *syncer) start(ctx context.Context, in workflows.BucketInput) error {
	id := workflows.BucketID(in.Spec.Name)
	if in.Spec.Keyed {
		id = workflows.ShardID(in.Spec.Name, in.Shard)
	}
	_, err := s.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                in.Spec.TaskQueue,
		Memo:                                     map[string]any{workflows.SpecMemo: in.Spec},
		WorkflowIDReusePolicy:                    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, workflows.BucketWorkflowType, in)
	return err
}

// configure gives the running bucket workflow id, on task queue queue, its new spec.
func (s *syncer) configure(ctx context.Context, id string, spec bucket.Spec, queue string) error {
	uctx, cancel := context.WithTimeout(ctx, reconfigureTimeout)
	defer cancel()
	h, err := s.c.UpdateWorkflow(uctx, client.UpdateWorkflowOptions{
		WorkflowID:   id,
		UpdateName:   workflows.ConfigureUpdate,
		Args:         []any{spec},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = h.Get(uctx, nil)
	}
	if err != nil && uctx.Err() != nil && ctx.Err() == nil {
		// Not transient: the bucket cannot answer without a worker.
		return fmt.Errorf("reconfiguring: no answer within %v: is a tb worker polling task queue %q?", reconfigureTimeout, queue)
	}
	if err != nil {
		return fmt.Errorf("reconfiguring: %w", err)
	}
	return nil
}

// ensureSchedule creates the refill Schedule, or updates it when its
// arguments (which carry the spec) or task queue differ. spec names its task queue.
func (s *syncer) ensureSchedule(ctx context.Context, spec bucket.Spec) (Action, string, error) {
	sched, err := spec.ParseSchedule()
	if err != nil {
		return "", "", err
	}
	action := &client.ScheduleWorkflowAction{
		ID:                       workflows.ScheduleID(spec.Name),
		Workflow:                 workflows.RefillWorkflowType,
		Args:                     []any{workflows.RefillInput{Spec: spec}},
		TaskQueue:                spec.TaskQueue,
		WorkflowExecutionTimeout: refillTimeout,
	}
	h := s.c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(spec.Name))
	for pass := 1; ; pass++ {
		desc, err := h.Describe(ctx)
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) {
			if s.dryRun {
				return Created, "", nil
			}
			_, err := s.c.ScheduleClient().Create(ctx, client.ScheduleOptions{
				ID:            workflows.ScheduleID(spec.Name),
				Spec:          Spec(sched),
				Action:        action,
				Overlap:       enumspb.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL,
				CatchupWindow: catchupWindow,
				Memo:          map[string]any{workflows.OwnerMemo: workflows.Owner},
				Note:          "Refills bucket " + spec.Name + "; managed by tb sync-schedules",
			})
			if errors.Is(err, temporal.ErrScheduleAlreadyRunning) && pass < 3 {
				continue // another sync created it first: compare with that
			}
			if err != nil {
				return Created, "", fmt.Errorf("creating: %w", err)
			}
			return Created, "", nil
		}
		if err != nil {
			return "", "", err
		}
		if !s.owned(desc.Memo) {
			return "", "", fmt.Errorf("Schedule %s exists but was not created by tb; leaving it alone", workflows.ScheduleID(spec.Name))
		}
		current, queue, err := s.scheduledSpec(desc.Schedule.Action)
		if err != nil {
			return "", "", err
		}
		// Where it starts refills is what counts: an older tb put "" in the arguments.
		current.TaskQueue = queue
		if sameSpec(current, spec) {
			return Unchanged, "", nil
		}
		details := diff(current, spec)
		if s.dryRun {
			return Updated, details, nil
		}
		err = h.Update(ctx, client.ScheduleUpdateOptions{
			DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
				sc := in.Description.Schedule
				newSpec := Spec(sched)
				sc.Spec = &newSpec
				sc.Action = action
				return &client.ScheduleUpdate{Schedule: &sc}, nil
			},
		})
		if err != nil {
			return Updated, details, fmt.Errorf("updating: %w", err)
		}
		return Updated, details, nil
	}
}

// owned reports whether a Schedule's memo marks it as tb's.
func (s *syncer) owned(memo *commonpb.Memo) bool {
	var owner string
	return s.decodeMemo(memo, workflows.OwnerMemo, &owner) == nil && owner == workflows.Owner
}

func (s *syncer) decodeMemo(memo *commonpb.Memo, key string, v any) error {
	p, ok := memo.GetFields()[key]
	if !ok {
		return fmt.Errorf("memo has no %q", key)
	}
	if err := s.opts.DataConverter.FromPayload(p, v); err != nil {
		return fmt.Errorf("reading memo %q: %w", key, err)
	}
	return nil
}

// scheduledSpec reads the spec and task queue out of a refill Schedule's action.
func (s *syncer) scheduledSpec(a client.ScheduleAction) (bucket.Spec, string, error) {
	wa, ok := a.(*client.ScheduleWorkflowAction)
	if !ok || len(wa.Args) != 1 {
		return bucket.Spec{}, "", fmt.Errorf("the Schedule's action is not a refill workflow")
	}
	p, ok := wa.Args[0].(*commonpb.Payload)
	if !ok {
		return bucket.Spec{}, "", fmt.Errorf("the Schedule's argument is a %T", wa.Args[0])
	}
	var in workflows.RefillInput
	if err := s.opts.DataConverter.FromPayload(p, &in); err != nil {
		return bucket.Spec{}, "", fmt.Errorf("reading the Schedule's argument: %w", err)
	}
	return in.Spec, wa.TaskQueue, nil
}

// sameSpec compares specs, reading an unset initial as the maximum it defaults to.
func sameSpec(a, b bucket.Spec) bool {
	ai, bi := a.InitialTokens(), b.InitialTokens()
	a.Initial, b.Initial = &ai, &bi
	a.Mode, b.Mode = mode(a), mode(b) // "" is "enforce"
	a.Shards, b.Shards = a.ShardCount(), b.ShardCount()
	return reflect.DeepEqual(a, b)
}

// mode names a spec's mode, "enforce" when unset.
func mode(s bucket.Spec) string {
	if s.Mode == "" {
		return bucket.ModeEnforce
	}
	return s.Mode
}

// diff describes how b differs from a, e.g. "amount 5 → 10, maximum 5 → 20".
func diff(a, b bucket.Spec) string {
	var parts []string
	add := func(field string, from, to any) {
		if !reflect.DeepEqual(from, to) {
			parts = append(parts, fmt.Sprintf("%s %v → %v", field, from, to))
		}
	}
	add("schedule", a.Schedule, b.Schedule)
	add("timezone", a.Timezone, b.Timezone)
	add("amount", a.Amount, b.Amount)
	add("maximum", a.Maximum, b.Maximum)
	add("initial", a.InitialTokens(), b.InitialTokens())
	add("mode", mode(a), mode(b))
	add("keyed", a.Keyed, b.Keyed)
	add("shards", a.ShardCount(), b.ShardCount())
	add("task queue", a.TaskQueue, b.TaskQueue)
	return strings.Join(parts, ", ")
}

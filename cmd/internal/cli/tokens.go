package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbucket/tb/workflows"
)

const queryTimeout = 5 * time.Second

type tokensCommand struct {
	g        *globals
	watch    bool
	interval time.Duration
}

func newTokensCommand(g *globals) *cobra.Command {
	t := &tokensCommand{g: g}
	cmd := &cobra.Command{
		Use:     "tokens [NAME...]",
		Aliases: []string{"status"},
		Short:   "Show the tokens of buckets (default: every bucket in buckets.yaml)",
		Args:    cobra.ArbitraryArgs,
		RunE:    t.run,
	}
	cmd.Flags().BoolVarP(&t.watch, "watch", "w", false, "refresh until interrupted; exit non-zero if the last refresh could not read every bucket")
	cmd.Flags().DurationVar(&t.interval, "interval", time.Second, "refresh interval with --watch")
	return cmd
}

// bucketStatus is one bucket's row: its state, or why there is none.
type bucketStatus struct {
	Bucket string            `json:"bucket"`
	Error  string            `json:"error,omitempty"`
	State  *workflows.Status `json:"state,omitempty"`
}

func (t *tokensCommand) run(cmd *cobra.Command, names []string) error {
	if t.interval <= 0 {
		return usageError{fmt.Errorf("--interval must be positive")}
	}
	ctx := cmd.Context()
	c, err := t.g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if len(names) == 0 {
		if names, err = t.defaultNames(ctx, c); err != nil {
			return err
		}
	}
	if !t.watch {
		rows := queryAll(ctx, c, names)
		if err := t.print(rows, time.Now()); err != nil {
			return err
		}
		return unread(rows)
	}
	// The exit status is the last refresh's, as if tb tokens had run once then.
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	var last []bucketStatus
	for {
		rows := queryAll(ctx, c, names)
		if ctx.Err() != nil {
			return unread(last) // interrupted mid-refresh: its rows are the interruption's
		}
		if isTerminal(t.g.io.Out) {
			fmt.Fprint(t.g.io.Out, "\x1b[H\x1b[2J")
		}
		if err := t.print(rows, time.Now()); err != nil {
			return err
		}
		last = rows
		select {
		case <-ctx.Done():
			return unread(last)
		case <-tick.C:
		}
	}
}

// unread reports how many rows hold no state.
func unread(rows []bucketStatus) error {
	if n := countErrors(rows); n > 0 {
		return fmt.Errorf("%d of %d buckets could not be read", n, len(rows))
	}
	return nil
}

// defaultNames returns the buckets of the config file, or when there is
// none, every running bucket workflow in the namespace.
func (t *tokensCommand) defaultNames(ctx context.Context, c client.Client) ([]string, error) {
	if cfg, err := t.g.loadConfig(); err == nil {
		names := make([]string, len(cfg.Buckets))
		for i, b := range cfg.Buckets {
			names[i] = b.Name
		}
		return names, nil
	} else if t.g.root.PersistentFlags().Changed("config") {
		return nil, err
	}
	return runningBuckets(ctx, c)
}

func runningBuckets(ctx context.Context, c client.Client) ([]string, error) {
	var names []string
	var token []byte
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query:         fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", workflows.BucketWorkflowType),
			NextPageToken: token,
		})
		if err != nil {
			return nil, fmt.Errorf("listing bucket workflows: %w", err)
		}
		for _, e := range resp.Executions {
			if name, ok := strings.CutPrefix(e.GetExecution().GetWorkflowId(), workflows.BucketIDPrefix); ok {
				names = append(names, name)
			}
		}
		if token = resp.NextPageToken; len(token) == 0 {
			break
		}
	}
	sort.Strings(names)
	return names, nil
}

func queryAll(ctx context.Context, c client.Client, names []string) []bucketStatus {
	rows := make([]bucketStatus, len(names))
	done := make(chan struct{}, len(names))
	for i, name := range names {
		go func() {
			defer func() { done <- struct{}{} }()
			rows[i] = queryBucket(ctx, c, name)
		}()
	}
	for range names {
		<-done
	}
	return rows
}

// queryBucket reads a bucket's state from its running workflow. A closed
// workflow is not queried (Temporal would answer from its last state, as if it
// still ran): the row says when and how it closed.
func queryBucket(ctx context.Context, c client.Client, name string) bucketStatus {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	row := bucketStatus{Bucket: name}
	// A run that has just continued as new has a successor: ask again.
	for range 3 {
		resp, err := c.QueryWorkflowWithOptions(ctx, &client.QueryWorkflowWithOptionsRequest{
			WorkflowID:           workflows.BucketID(name),
			QueryType:            workflows.StateQuery,
			QueryRejectCondition: enumspb.QUERY_REJECT_CONDITION_NOT_OPEN,
		})
		if err != nil {
			row.Error = describeQueryError(err)
			return row
		}
		if rejected := resp.QueryRejected; rejected != nil {
			if rejected.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW {
				continue
			}
			row.Error = closed(ctx, c, name, rejected.GetStatus())
			return row
		}
		var st workflows.Status
		if err := resp.QueryResult.Get(&st); err != nil {
			row.Error = describeQueryError(err)
			return row
		}
		row.State = &st
		return row
	}
	row.Error = "not running: it continued as new three times while tb asked; try again"
	return row
}

// closed describes a bucket whose workflow has closed with the given status.
func closed(ctx context.Context, c client.Client, name string, how enumspb.WorkflowExecutionStatus) string {
	// WORKFLOW_EXECUTION_STATUS_TIMED_OUT → "timed out"
	ended := strings.TrimPrefix(enumspb.WorkflowExecutionStatus_name[int32(how)], "WORKFLOW_EXECUTION_STATUS_")
	ended = strings.ReplaceAll(strings.ToLower(ended), "_", " ")
	at := ""
	if desc, err := c.DescribeWorkflowExecution(ctx, workflows.BucketID(name), ""); err == nil {
		if t := desc.GetWorkflowExecutionInfo().GetCloseTime(); t != nil {
			at = " at " + t.AsTime().UTC().Format(time.RFC3339)
		}
	}
	if how == enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		// A bucket workflow completes only when tb sync-schedules --retire ends it.
		return "not running: retired (completed" + at + ")"
	}
	return "not running: " + ended + at + " (run tb sync-schedules)"
}

// describeQueryError says what a failed query means for the bucket. A query
// nobody answers ends in a deadline: the context's, or one reported by gRPC
// or the server, which errors.Is(context.DeadlineExceeded) does not match.
func describeQueryError(err error) string {
	var notFound *serviceerror.NotFound
	var deadline *serviceerror.DeadlineExceeded
	switch {
	case errors.As(err, &notFound):
		return "not running (run tb sync-schedules)"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &deadline), status.Code(err) == codes.DeadlineExceeded:
		return "no answer: is a tb worker running?"
	}
	return err.Error()
}

func countErrors(rows []bucketStatus) int {
	n := 0
	for _, r := range rows {
		if r.Error != "" {
			n++
		}
	}
	return n
}

func (t *tokensCommand) print(rows []bucketStatus, now time.Time) error {
	if t.g.json() {
		return t.g.printJSON(rows)
	}
	return printTokens(t.g.io.Out, rows, now)
}

func printTokens(w io.Writer, rows []bucketStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUCKET\tTOKENS\tAMOUNT\tSCHEDULE\tNEXT REFILL\tLAST REFILL\tGRANTED\tDENIED")
	for _, r := range rows {
		if r.State == nil {
			// Every column, so that the rows below keep the header's columns;
			// the reason goes last, where its width moves nothing.
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t%s\n", r.Bucket, r.Error)
			continue
		}
		st := r.State
		schedule := st.Spec.Schedule
		if st.Spec.Timezone != "" {
			schedule += " (" + st.Spec.Timezone + ")"
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%d\t%s\t%s\t%s\t%d\t%d\n", r.Bucket, st.Tokens, st.Spec.Maximum, st.Spec.Amount,
			schedule, relative(st.NextRefill, now), relative(st.LastRefill, now), st.Granted, st.Denied)
	}
	return tw.Flush()
}

// relative renders t as "in 1.2s" or "3s ago".
func relative(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	abs := d.Abs()
	switch {
	case abs < 10*time.Second:
		abs = abs.Round(100 * time.Millisecond)
	case abs < time.Hour:
		abs = abs.Round(time.Second)
	default:
		abs = abs.Round(time.Minute)
	}
	if d >= 0 {
		return "in " + abs.String()
	}
	return abs.String() + " ago"
}

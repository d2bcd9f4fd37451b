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
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

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
	cmd.Flags().BoolVarP(&t.watch, "watch", "w", false, "refresh until interrupted")
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
		for _, r := range rows {
			if r.Error != "" {
				return fmt.Errorf("%d of %d buckets could not be read", countErrors(rows), len(rows))
			}
		}
		return nil
	}
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		rows := queryAll(ctx, c, names)
		if isTerminal(t.g.io.Out) {
			fmt.Fprint(t.g.io.Out, "\x1b[H\x1b[2J")
		}
		if err := t.print(rows, time.Now()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
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

func queryBucket(ctx context.Context, c client.Client, name string) bucketStatus {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	row := bucketStatus{Bucket: name}
	v, err := c.QueryWorkflow(ctx, workflows.BucketID(name), "", workflows.StateQuery)
	var st workflows.Status
	if err == nil {
		err = v.Get(&st)
	}
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound):
		row.Error = "not running (run tb sync-schedules)"
	case errors.Is(err, context.DeadlineExceeded):
		row.Error = "no answer: is a tb worker running?"
	case err != nil:
		row.Error = err.Error()
	default:
		row.State = &st
	}
	return row
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
			fmt.Fprintf(tw, "%s\t%s\n", r.Bucket, r.Error)
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

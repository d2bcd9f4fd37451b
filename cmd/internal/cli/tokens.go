package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

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
	return operator.Running(ctx, c)
}

// queryAll reads the named buckets' states, a row each, in order.
func queryAll(ctx context.Context, c client.Client, names []string) []bucketStatus {
	results := operator.States(ctx, c, names)
	rows := make([]bucketStatus, len(results))
	for i, r := range results {
		rows[i] = statusRow(r.Bucket, r.Status, r.Err)
	}
	return rows
}

// statusRow is a bucket's row: its state, or what err means for it.
func statusRow(name string, st workflows.Status, err error) bucketStatus {
	if err != nil {
		return bucketStatus{Bucket: name, Error: describeStateError(name, err)}
	}
	return bucketStatus{Bucket: name, State: &st}
}

// describeStateError says what an error of operator.State means for the
// bucket, in the row that names it.
func describeStateError(name string, err error) string {
	var (
		notRunning *operator.NotRunningError
		noAnswer   *operator.NoAnswerError
	)
	switch {
	case errors.As(err, &notRunning):
		at := ""
		if !notRunning.Closed.IsZero() {
			at = " at " + notRunning.Closed.UTC().Format(time.RFC3339)
		}
		switch notRunning.Status {
		case enumspb.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED:
			return "not running (run tb sync-schedules)"
		case enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED:
			// A bucket workflow completes only when tb sync-schedules --retire ends it.
			return "not running: retired (completed" + at + ")"
		}
		// WORKFLOW_EXECUTION_STATUS_TIMED_OUT → "timed out"
		ended := strings.TrimPrefix(enumspb.WorkflowExecutionStatus_name[int32(notRunning.Status)], "WORKFLOW_EXECUTION_STATUS_")
		ended = strings.ReplaceAll(strings.ToLower(ended), "_", " ")
		return "not running: " + ended + at + " (run tb sync-schedules)"
	case errors.As(err, &noAnswer):
		return "no answer: is a tb worker running?"
	}
	// The row names the bucket already.
	return strings.TrimPrefix(err.Error(), fmt.Sprintf("bucket %q: ", name))
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
	fmt.Fprintln(tw, "BUCKET\tTOKENS\tAMOUNT\tSCHEDULE\tNEXT REFILL\tLAST REFILL\tGRANTED\tDENIED\tREFUNDED\tDEBT\tPAUSED\tWOULD DENY")
	for _, r := range rows {
		if r.State == nil {
			// Every column, so that the rows below keep the header's columns;
			// the reason goes last, where its width moves nothing.
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\n", r.Bucket, r.Error)
			continue
		}
		st := r.State
		schedule := st.Spec.Schedule
		if st.Spec.Timezone != "" {
			schedule += " (" + st.Spec.Timezone + ")"
		}
		paused := "-"
		if st.PausedUntil.After(now) {
			paused = "until " + st.PausedUntil.Local().Format("15:04:05") + " (" + relative(st.PausedUntil, now) + ")"
		}
		wouldDeny := "-" // enforcing: it denies
		if st.Spec.Shadow() {
			wouldDeny = fmt.Sprint(st.WouldDeny)
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", r.Bucket, st.Tokens, st.Spec.Maximum, st.Spec.Amount,
			schedule, relative(st.NextRefill, now), relative(st.LastRefill, now), st.Granted, st.Denied, st.Refunded, st.Debt, paused, wouldDeny)
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

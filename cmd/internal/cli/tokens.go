package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
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
	keys     []string
}

func newTokensCommand(g *globals) *cobra.Command {
	t := &tokensCommand{g: g}
	cmd := &cobra.Command{
		Use:     "tokens [NAME...] [--key KEY...]",
		Aliases: []string{"status"},
		Short:   "Show the tokens of buckets (default: every bucket in buckets.yaml), or of keys of a keyed bucket",
		Args:    cobra.ArbitraryArgs,
		RunE:    t.run,
	}
	cmd.Flags().BoolVarP(&t.watch, "watch", "w", false, "refresh until interrupted; exit non-zero if the last refresh could not read every bucket")
	cmd.Flags().DurationVar(&t.interval, "interval", time.Second, "refresh interval with --watch")
	cmd.Flags().StringArrayVar(&t.keys, "key", nil, "with one keyed bucket NAME: show this key's tokens (repeatable)")
	return cmd
}

// bucketStatus is one bucket's row, or with Key one key's: its state, or why there is none.
type bucketStatus struct {
	Bucket   string               `json:"bucket"`
	Key      string               `json:"key,omitempty"`
	Error    string               `json:"error,omitempty"`
	State    *workflows.Status    `json:"state,omitempty"`
	KeyState *workflows.KeyStatus `json:"keyState,omitempty"`
}

func (t *tokensCommand) run(cmd *cobra.Command, names []string) error {
	if t.interval <= 0 {
		return usageError{fmt.Errorf("--interval must be positive")}
	}
	if len(t.keys) > 0 && len(names) != 1 {
		return usageError{fmt.Errorf("--key needs exactly one bucket NAME, got %d", len(names))}
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
	read := func() []bucketStatus { return queryAll(ctx, c, names) }
	if len(t.keys) > 0 {
		read = func() []bucketStatus { return queryKeys(ctx, c, names[0], t.keys) }
	}
	if !t.watch {
		rows := read()
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
		rows := read()
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
		what := "buckets"
		if rows[0].Key != "" {
			what = "keys"
		}
		return fmt.Errorf("%d of %d %s could not be read", n, len(rows), what)
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

// queryKeys reads keys of the named keyed bucket, a row each, in order.
func queryKeys(ctx context.Context, c client.Client, name string, keys []string) []bucketStatus {
	rows := make([]bucketStatus, len(keys))
	var wg sync.WaitGroup
	for i, key := range keys {
		wg.Go(func() {
			st, err := operator.KeyState(ctx, c, name, key)
			rows[i] = bucketStatus{Bucket: name, Key: key, KeyState: &st}
			if err != nil {
				rows[i] = bucketStatus{Bucket: name, Key: key, Error: describeStateError(name, err)}
			}
		})
	}
	wg.Wait()
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
	if len(t.keys) > 0 {
		return printKeys(t.g.io.Out, rows, now)
	}
	return printTokens(t.g.io.Out, rows, now)
}

// printKeys prints the rows of keys of a keyed bucket.
func printKeys(w io.Writer, rows []bucketStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUCKET\tKEY\tTOKENS\tNEXT REFILL\tDEBT\tPAUSED\tLAST USED")
	for _, r := range rows {
		if r.KeyState == nil {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t%s\n", r.Bucket, r.Key, r.Error)
			continue
		}
		k := r.KeyState
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\n", r.Bucket, r.Key, k.Tokens, relative(k.NextRefill, now), k.Debt, pausedFor(k.PausedUntil, now), relative(k.Used, now))
	}
	return tw.Flush()
}

// pausedFor renders a pause that lasts until until, or "-".
func pausedFor(until, now time.Time) string {
	if !until.After(now) {
		return "-"
	}
	return "until " + until.Local().Format("15:04:05") + " (" + relative(until, now) + ")"
}

func printTokens(w io.Writer, rows []bucketStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUCKET\tTOKENS\tAMOUNT\tSCHEDULE\tNEXT REFILL\tLAST REFILL\tGRANTED\tDENIED\tREFUNDED\tDEBT\tPAUSED\tWOULD DENY")
	var keyed []*bucketStatus
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
		wouldDeny := "-" // enforcing: it denies
		if st.Spec.Shadow() {
			wouldDeny = fmt.Sprint(st.WouldDeny)
		}
		tokens, debt := fmt.Sprintf("%d/%d", st.Tokens, st.Spec.Maximum), fmt.Sprint(st.Debt)
		if st.Spec.Keyed {
			// Each key holds its own: the lines below the table name the emptiest.
			tokens, debt = fmt.Sprintf("%d keys, each /%d", st.Keys, st.Spec.Maximum), "-"
			keyed = append(keyed, &r)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", r.Bucket, tokens, st.Spec.Amount,
			schedule, relative(st.NextRefill, now), relative(st.LastRefill, now), st.Granted, st.Denied, st.Refunded, debt, pausedFor(st.PausedUntil, now), wouldDeny)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range keyed {
		var emptiest []string
		for _, k := range r.State.Emptiest {
			emptiest = append(emptiest, fmt.Sprintf("%s %d/%d", k.Key, k.Tokens, r.State.Spec.Maximum))
		}
		if len(emptiest) == 0 {
			emptiest = []string{"none: every key is at its starting level"}
		}
		if _, err := fmt.Fprintf(w, "%s: %d keys held on %d shards; emptiest: %s\n", r.Bucket, r.State.Keys, r.State.Spec.ShardCount(), strings.Join(emptiest, ", ")); err != nil {
			return err
		}
	}
	return nil
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

package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

type syncCommand struct {
	g      *globals
	opts   operator.Options
	dryRun bool
}

func newSyncCommand(g *globals) *cobra.Command {
	s := &syncCommand{g: g}
	cmd := &cobra.Command{
		Use:   "sync-schedules",
		Short: "Make Temporal's refill Schedules and bucket workflows match buckets.yaml",
		Long: `sync-schedules creates the refill Schedule and bucket workflow of each bucket in
buckets.yaml, updates those that changed (a bucket keeps its tokens), and deletes
the Schedules tb created for buckets no longer in the file (--retire also ends
their bucket workflows). A bucket moves to the task queue its task_queue (or
--task-queue) names. It leaves every other Schedule alone. Running it again
reports everything unchanged. Run it at deploy time.`,
		RunE: s.run,
	}
	f := cmd.Flags()
	f.BoolVar(&s.dryRun, "dry-run", false, "show what would change, change nothing")
	f.BoolVar(&s.opts.Retire, "retire", false, "also end the bucket workflows of buckets removed from the file")
	f.BoolVar(&s.opts.DeleteAll, "delete-all", false, "allow a file with no buckets to delete every Schedule (with --retire, every bucket) tb owns")
	f.StringVar(&s.opts.TaskQueue, "task-queue", workflows.TaskQueue, "task queue of the tb worker that runs bucket and refill workflows")
	f.IntVar(&s.opts.Concurrency, "concurrency", 8, "buckets synced at once")
	return cmd
}

func (s *syncCommand) run(cmd *cobra.Command, _ []string) error {
	if err := bucket.CheckTaskQueue(s.opts.TaskQueue); err != nil {
		return usageError{fmt.Errorf("--task-queue %w", err)}
	}
	cfg, err := s.g.loadConfig()
	if err != nil {
		return err
	}
	s.g.warnTogether(cfg)
	c, err := s.g.dial(cmd.Context())
	if err != nil {
		return err
	}
	defer c.Close()
	// Memos and Schedule arguments are read with the converter the client writes with.
	copts, err := s.g.clientOptions()
	if err != nil {
		return err
	}
	s.opts.DataConverter = copts.DataConverter
	sync := operator.Apply
	if s.dryRun {
		sync = operator.Plan
	}
	changes, syncErr := sync(cmd.Context(), c, cfg, s.opts)
	var empty *operator.EmptyConfigError
	if errors.As(syncErr, &empty) {
		return fmt.Errorf("%s declares no buckets: syncing would remove the %d buckets tb owns (%s); run with --delete-all to do that",
			s.g.config, len(empty.Buckets), strings.Join(empty.Buckets, ", "))
	}
	for _, ch := range changes {
		for _, w := range ch.Warnings {
			fmt.Fprintf(s.g.io.Err, "tb: warning: bucket %q: %s\n", ch.Bucket, w)
		}
	}
	if err := s.print(changes); err != nil {
		return err
	}
	return syncErr
}

func (s *syncCommand) print(changes []operator.Change) error {
	if s.g.json() {
		type row struct {
			operator.Change
			Error string `json:"error,omitempty"`
		}
		rows := []row{}
		for _, ch := range changes {
			r := row{Change: ch}
			if ch.Err != nil {
				r.Error = ch.Err.Error()
			}
			rows = append(rows, r)
		}
		return s.g.printJSON(map[string]any{"dryRun": s.dryRun, "buckets": rows})
	}
	tw := tabwriter.NewWriter(s.g.io.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUCKET\tSCHEDULE\tWORKFLOW\tDETAILS")
	for _, ch := range changes {
		details := ch.Details
		if ch.Err != nil {
			details = "FAILED: " + ch.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ch.Bucket, s.verb(ch.Schedule), s.verb(ch.Workflow), details)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if s.dryRun {
		fmt.Fprintln(s.g.io.Out, "dry run: nothing was changed")
	}
	return nil
}

// verb renders an action, as a plan in a dry run.
func (s *syncCommand) verb(a operator.Action) string {
	if a == "" {
		return "-"
	}
	if !s.dryRun || a == operator.Unchanged || a == operator.Kept {
		return string(a)
	}
	return map[operator.Action]string{
		operator.Created: "would create",
		operator.Updated: "would update",
		operator.Deleted: "would delete",
		operator.Retired: "would retire",
	}[a]
}

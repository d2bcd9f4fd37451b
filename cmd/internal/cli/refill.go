package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"go.temporal.io/api/serviceerror"

	"github.com/tokenbucket/tb/workflows"
)

type refillCommand struct {
	g      *globals
	amount int64
}

func newRefillCommand(g *globals) *cobra.Command {
	r := &refillCommand{g: g}
	cmd := &cobra.Command{
		Use:   "refill NAME",
		Short: "Add tokens to a bucket now (capped at its maximum)",
		Args:  cobra.ExactArgs(1),
		RunE:  r.run,
	}
	cmd.Flags().Int64Var(&r.amount, "amount", 0, "tokens to add (default: the bucket's amount)")
	return cmd
}

func (r *refillCommand) run(cmd *cobra.Command, args []string) error {
	if cmd.Flags().Changed("amount") && r.amount <= 0 {
		return usageError{fmt.Errorf("--amount must be greater than 0, got %d", r.amount)}
	}
	name := args[0]
	ctx := cmd.Context()
	c, err := r.g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	before := queryBucket(ctx, c, name)
	sig := workflows.Refill{ID: "manual-" + uuid.NewString(), Amount: r.amount}
	if err := c.SignalWorkflow(ctx, workflows.BucketID(name), "", workflows.RefillSignal, sig); err != nil {
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) {
			return fmt.Errorf("bucket %q is not running (run tb sync-schedules)", name)
		}
		return fmt.Errorf("bucket %q: %w", name, err)
	}
	// Show the bucket once the refill has been applied.
	after := before
	if before.State != nil {
		deadline, cancel := context.WithTimeout(ctx, queryTimeout)
		defer cancel()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for after.State != nil && !after.State.LastRefill.After(before.State.LastRefill) {
			select {
			case <-deadline.Done():
				return fmt.Errorf("bucket %q: refill sent, but the bucket has not applied it yet: is a tb worker running?", name)
			case <-tick.C:
				after = queryBucket(ctx, c, name)
			}
		}
	}
	if r.g.json() {
		return r.g.printJSON(after)
	}
	if after.State == nil {
		fmt.Fprintf(r.g.io.Out, "refill sent to bucket %s\n", name)
		return nil
	}
	fmt.Fprintf(r.g.io.Out, "bucket %s: %d → %d tokens (maximum %d)\n", name, before.State.Tokens, after.State.Tokens, after.State.Spec.Maximum)
	return nil
}

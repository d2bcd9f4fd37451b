package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tokenbucket/tb/operator"
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
	before, after, err := operator.Refill(ctx, c, name, operator.RefillOptions{Amount: r.amount})
	var (
		notRunning *operator.NotRunningError
		noAnswer   *operator.NoAnswerError
		notApplied *operator.NotAppliedError
	)
	switch {
	case errors.As(err, &notRunning):
		return fmt.Errorf("bucket %q is not running (run tb sync-schedules)", name)
	case errors.As(err, &notApplied) && errors.As(err, &noAnswer):
		// Sent to a bucket that did not answer: it applies the refill once a worker runs it.
		if r.g.json() {
			return r.g.printJSON(statusRow(name, before, noAnswer))
		}
		fmt.Fprintf(r.g.io.Out, "refill sent to bucket %s\n", name)
		return nil
	case err != nil:
		return err
	}
	if r.g.json() {
		return r.g.printJSON(statusRow(name, after, nil))
	}
	fmt.Fprintf(r.g.io.Out, "bucket %s: %d → %d tokens (maximum %d)\n", name, before.Tokens, after.Tokens, after.Spec.Maximum)
	return nil
}

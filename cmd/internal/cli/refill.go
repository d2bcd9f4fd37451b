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
	key    string
}

func newRefillCommand(g *globals) *cobra.Command {
	r := &refillCommand{g: g}
	cmd := &cobra.Command{
		Use:   "refill NAME [--key KEY]",
		Short: "Add tokens to a bucket, or to one key of a keyed bucket, now (capped at its maximum)",
		Args:  cobra.ExactArgs(1),
		RunE:  r.run,
	}
	cmd.Flags().Int64Var(&r.amount, "amount", 0, "tokens to add (default: the bucket's amount)")
	cmd.Flags().StringVar(&r.key, "key", "", "the key of a keyed bucket to refill")
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
	opts := operator.RefillOptions{Amount: r.amount}
	if cmd.Flags().Changed("key") {
		before, after, err := operator.RefillKey(ctx, c, name, r.key, opts)
		if sent, err := r.failed(name, err); sent {
			if r.g.json() {
				return r.g.printJSON(bucketStatus{Bucket: name, Key: r.key, Error: describeStateError(name, err)})
			}
			fmt.Fprintf(r.g.io.Out, "refill sent to key %s of bucket %s\n", r.key, name)
			return nil
		} else if err != nil {
			return err
		}
		if r.g.json() {
			return r.g.printJSON(bucketStatus{Bucket: name, Key: r.key, KeyState: &after})
		}
		fmt.Fprintf(r.g.io.Out, "bucket %s, key %s: %d → %d tokens\n", name, r.key, before.Tokens, after.Tokens)
		return nil
	}
	before, after, err := operator.Refill(ctx, c, name, opts)
	if sent, err := r.failed(name, err); sent {
		if r.g.json() {
			return r.g.printJSON(statusRow(name, before, err))
		}
		fmt.Fprintf(r.g.io.Out, "refill sent to bucket %s\n", name)
		return nil
	} else if err != nil {
		return err
	}
	if r.g.json() {
		return r.g.printJSON(statusRow(name, after, nil))
	}
	fmt.Fprintf(r.g.io.Out, "bucket %s: %d → %d tokens (maximum %d)\n", name, before.Tokens, after.Tokens, after.Spec.Maximum)
	return nil
}

// failed classifies the error of a refill: sent reports a refill sent to a
// bucket that did not answer, which applies it once a worker runs it (err is
// then the *operator.NoAnswerError, for the JSON row, and the command
// succeeds); otherwise err is the command's error, or nil.
func (r *refillCommand) failed(name string, err error) (sent bool, _ error) {
	var (
		notRunning *operator.NotRunningError
		noAnswer   *operator.NoAnswerError
		notApplied *operator.NotAppliedError
	)
	switch {
	case errors.As(err, &notRunning):
		return false, fmt.Errorf("bucket %q is not running (run tb sync-schedules)", name)
	case errors.As(err, &notApplied) && errors.As(err, &noAnswer):
		return true, noAnswer
	}
	return false, err
}

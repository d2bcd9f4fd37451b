// Package cli implements the tb command.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"

	"github.com/tokenbucket/tb/bucket"
)

// IO is what a command reads and writes; tests supply their own.
type IO struct {
	Out, Err io.Writer
	// Env looks up TEMPORAL_* variables; nil means the process environment.
	Env envconfig.EnvLookup
}

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command ran and something failed
	ExitUsage   = 2 // bad flags or arguments
)

// Main runs tb with args (without the program name) and returns the exit code.
func Main(ctx context.Context, stdio IO, args []string) int {
	if stdio.Env == nil {
		stdio.Env = envconfig.EnvLookupOS
	}
	root := NewCommand(stdio)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stdio.Err, "tb: %v\n", err)
	var usage usageError
	// cobra reports an unknown command with a plain error.
	if errors.As(err, &usage) || strings.HasPrefix(err.Error(), "unknown command") {
		return ExitUsage
	}
	return ExitFailure
}

// usageError marks errors in how tb was called.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// globals holds the flags every command shares.
type globals struct {
	io     IO
	conn   connFlags
	config string
	output string
	root   *cobra.Command
}

// NewCommand returns the tb command tree.
func NewCommand(stdio IO) *cobra.Command {
	g := &globals{io: stdio}
	root := &cobra.Command{
		Use:   "tb",
		Short: "Token-bucket rate limiting for Temporal",
		Long: `tb enforces API quotas across every Temporal worker. Each bucket in buckets.yaml
is a workflow holding tokens, refilled by a Temporal Schedule; a worker
interceptor takes a token before each guarded activity.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "text" && g.output != "json" {
				return usageError{fmt.Errorf("--output must be text or json, not %q", g.output)}
			}
			if g.conn.connectTimeout <= 0 {
				return usageError{fmt.Errorf("--connect-timeout must be positive, got %v", g.conn.connectTimeout)}
			}
			return nil
		},
	}
	g.root = root
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	g.conn.register(pf)
	pf.StringVarP(&g.config, "config", "c", bucket.DefaultFile, "bucket definitions")
	pf.StringVarP(&g.output, "output", "o", "text", "output format: text or json")

	root.AddCommand(
		newValidateCommand(g),
		newSyncCommand(g),
		newTokensCommand(g),
		newRefillCommand(g),
		newWorkerCommand(g),
		newDevCommand(g),
		newVersionCommand(g),
	)
	for _, c := range root.Commands() {
		if c.Args == nil {
			c.Args = cobra.NoArgs
		}
		wrapArgs(c)
	}
	return root
}

// wrapArgs reports argument errors as usage errors.
func wrapArgs(c *cobra.Command) {
	check := c.Args
	c.Args = func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func (g *globals) loadConfig() (*bucket.Config, error) {
	return bucket.Load(g.config)
}

// warnTogether warns on stderr when more buckets tick in the same second in
// the coming week than Temporal's Schedules start by default in a second.
func (g *globals) warnTogether(cfg *bucket.Config) {
	now := time.Now()
	t := bucket.TickTogether(cfg.Buckets, now, now.Add(7*24*time.Hour), 1440)
	if t.Buckets > bucket.ScheduleStartRate {
		fmt.Fprintf(g.io.Err, "tb: warning: %v; Temporal's Schedules start %d workflows a second per namespace by default, so some refills will land late: raise worker.schedulerNamespaceStartWorkflowRPS or spread the schedules\n",
			t, bucket.ScheduleStartRate)
	}
}

// logger writes warnings and errors to stderr: the SDK's own chatter stays out of tb's output.
func (g *globals) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(g.io.Err, &slog.HandlerOptions{Level: level}))
}

func (g *globals) clientOptions() (client.Options, error) {
	return g.conn.clientOptions(g.root.PersistentFlags(), g.io.Env)
}

func (g *globals) dial(ctx context.Context) (client.Client, error) {
	opts, err := g.clientOptions()
	if err != nil {
		return nil, err
	}
	return dial(ctx, opts, g.conn.connectTimeout, g.logger(slog.LevelWarn))
}

func (g *globals) json() bool { return g.output == "json" }

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.io.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// isTerminal reports whether w is an interactive terminal, where tables can refresh in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenbucket/tb/activities"
	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/demo"
	"github.com/tokenbucket/tb/cmd/internal/devserver"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

type devCommand struct {
	g         *globals
	dbFile    string
	ephemeral bool
	uiAddress string
	headless  bool
	demo      bool
	demoJobs  int
	demoLimit int64
	interval  time.Duration
	logLevel  string
	metrics   metricsFlag
}

func newDevCommand(g *globals) *cobra.Command {
	d := &devCommand{g: g, metrics: metricsFlag{fallback: true}}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run Temporal, a tb worker and your buckets in one process",
		Long: `dev starts an embedded Temporal server (SQLite; the Web UI alongside), a tb
worker, and syncs buckets.yaml into it. Other programs connect to it as to
"temporal server start-dev": tb tokens, your own workers, the temporal CLI.
With --demo it also runs jobs that call a simulated quota-limited API through
tb's interceptor, faster than the quota allows, and shows each bucket live.
It serves the worker's and the demo's metrics for Prometheus (see
--metrics-address). Ctrl-C stops everything.`,
		RunE: d.run,
	}
	f := cmd.Flags()
	f.StringVar(&d.dbFile, "db-file", ".tb/dev.db", "SQLite file that keeps Temporal's state, and the tokens, across restarts")
	f.BoolVar(&d.ephemeral, "ephemeral", false, "keep everything in memory")
	f.StringVar(&d.uiAddress, "ui-address", "127.0.0.1:8233", "where the Temporal Web UI listens")
	f.BoolVar(&d.headless, "headless", false, "do not start the Web UI")
	f.BoolVar(&d.demo, "demo", false, "run a demo workload against a simulated quota-limited API")
	f.IntVar(&d.demoJobs, "demo-jobs", 20, "demo jobs kept running at once")
	f.Int64Var(&d.demoLimit, "demo-api-limit", 0, "calls the demo API really allows per refill of its bucket, fewer than the bucket believes to see tb pause on its 429s (default: the bucket's maximum)")
	f.DurationVar(&d.interval, "interval", time.Second, "refresh interval of the live table")
	f.StringVar(&d.logLevel, "log-level", "error", "server and worker log level: debug, info, warn or error")
	f.StringVar(&d.metrics.address, "metrics-address", DefaultDevMetricsAddress, metricsUsage+"; a free port of the host when the default is taken")
	return cmd
}

func (d *devCommand) run(cmd *cobra.Command, _ []string) error {
	ctx := cmd.Context()
	var level slog.Level
	if err := level.UnmarshalText([]byte(d.logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level: %w", err)}
	}
	if d.interval <= 0 {
		return usageError{errors.New("--interval must be positive")}
	}
	cfg, err := d.g.loadConfig()
	if err != nil {
		return err
	}
	opts, err := d.g.clientOptions()
	if err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(opts.HostPort); err != nil {
		return usageError{fmt.Errorf("--address %q: %w", opts.HostPort, err)}
	}
	// Once stopping begins, the server and the SDK report every cancelled
	// operation; none of it is news, so logs end there.
	quiet := &mutableHandler{Handler: slog.NewTextHandler(d.g.io.Err, &slog.HandlerOptions{Level: level})}
	logger := slog.New(quiet)
	go func() {
		<-ctx.Done()
		quiet.muted.Store(true)
	}()
	out := d.g.io.Out
	m, err := d.metrics.serve(cmd.Flags().Changed("metrics-address"), logger)
	if err != nil {
		return err
	}
	if m != nil {
		defer m.Close()
		opts.MetricsHandler = m.Handler() // the tb worker's and the demo's
	}

	srvOpts := devserver.Options{Address: opts.HostPort, Namespace: opts.Namespace, DBFile: d.dbFile, Ephemeral: d.ephemeral, Logger: logger}
	if !d.headless {
		srvOpts.UIAddress = d.uiAddress
	}
	srv, err := devserver.Start(ctx, srvOpts)
	if err != nil {
		return err
	}
	defer srv.Stop()
	opts.HostPort = srv.Address()
	c, err := dial(ctx, opts, d.g.conn.connectTimeout, logger)
	if err != nil {
		return err
	}
	defer c.Close()

	w, err := startWorker(c, workflows.TaskQueue)
	if err != nil {
		return err
	}
	defer w.Stop()

	demoSpec, demoBucketAdded := d.demoBucket(cfg)
	changes, err := operator.Apply(ctx, c, cfg, operator.Options{})
	if err != nil {
		return fmt.Errorf("syncing %s: %w", d.g.config, err)
	}

	state := "in memory"
	if !d.ephemeral {
		state = "in " + d.dbFile
	}
	fmt.Fprintf(out, "Temporal server at %s, namespace %s, state %s\n", srv.Address(), srv.Namespace(), state)
	if srv.UIAddress() != "" {
		fmt.Fprintf(out, "Web UI at http://%s/namespaces/%s/schedules\n", srv.UIAddress(), srv.Namespace())
	}
	if m != nil {
		fmt.Fprintf(out, "Metrics at %s\n", m.URL())
	}
	fmt.Fprintf(out, "tb worker on task queue %q; %d buckets synced from %s", workflows.TaskQueue, len(changes), d.g.config)
	if demoBucketAdded {
		fmt.Fprintf(out, " (plus %s for the demo)", demoSpec.Name)
	}
	fmt.Fprintf(out, "\nTry: go run ./cmd/tb tokens --address %s   (Ctrl-C to stop)\n\n", srv.Address())

	if !d.demo {
		<-ctx.Done()
		fmt.Fprintln(out, "stopping")
		return nil
	}
	demoCtx, stopDemo := context.WithCancel(ctx)
	run, err := demo.Start(demoCtx, c, demoSpec, demo.Options{Jobs: d.demoJobs, APILimit: d.demoLimit})
	if err != nil {
		stopDemo()
		return err
	}
	defer func() {
		stopDemo()
		run.Stop()
	}()
	names := make([]string, len(cfg.Buckets))
	for i, b := range cfg.Buckets {
		names[i] = b.Name
	}
	d.live(ctx, out, func() []bucketStatus { return queryAll(ctx, c, names) }, run)
	fmt.Fprintln(out, "stopping")
	return nil
}

// demoBucket returns the bucket guarding CallDemoAPI, adding the demo's own
// bucket to cfg when none does.
func (d *devCommand) demoBucket(cfg *bucket.Config) (bucket.Spec, bool) {
	if !d.demo {
		return bucket.Spec{}, false
	}
	if gs, ok := cfg.Guards[activities.DemoActivity]; ok {
		if spec, ok := cfg.Bucket(gs[0].Bucket); ok {
			return spec, false
		}
	}
	spec := demo.DefaultBucket
	cfg.Buckets = append(cfg.Buckets, spec)
	cfg.Guards[activities.DemoActivity] = []bucket.Guard{{Bucket: spec.Name, Cost: 1}}
	return spec, true
}

// live prints the buckets and the demo's API counts every interval until ctx ends.
func (d *devCommand) live(ctx context.Context, out io.Writer, query func() []bucketStatus, run *demo.Demo) {
	tick := time.NewTicker(d.interval)
	defer tick.Stop()
	prev := map[string]*workflows.Status{}
	prevAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rows, now := query(), time.Now()
		if ctx.Err() != nil {
			return
		}
		if isTerminal(out) {
			fmt.Fprint(out, "\x1b[H\x1b[2J")
		}
		secs := now.Sub(prevAt).Seconds()
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "%s\nBUCKET\tTOKENS\tGRANTED/S\tDENIED/S\tNEXT REFILL\tGRANTED\tDENIED\tPAUSES\tPAUSED\n", now.Format("15:04:05"))
		for _, r := range rows {
			if r.State == nil {
				fmt.Fprintf(tw, "%s\t%s\n", r.Bucket, r.Error)
				continue
			}
			st, rate := r.State, func(cur, old int64) string { return "-" }
			if p := prev[r.Bucket]; p != nil {
				rate = func(cur, old int64) string { return fmt.Sprintf("%.1f", float64(cur-old)/secs) }
			} else {
				prev[r.Bucket] = &workflows.Status{}
			}
			p := prev[r.Bucket]
			paused := "-"
			if st.PausedUntil.After(now) {
				paused = relative(st.PausedUntil, now)
			}
			fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.Bucket, st.Tokens, st.Spec.Maximum,
				rate(st.Granted, p.Granted), rate(st.Denied, p.Denied), relative(st.NextRefill, now), st.Granted, st.Denied, st.Pauses, paused)
			*p = *st
		}
		tw.Flush()
		ok, over := run.API.Counts()
		done, failed := run.Counts()
		fmt.Fprintf(out, "demo API (%s: %d per refill of %s, the API allows %d): %d calls answered, %d refused with 429; jobs: %d done, %d failed\n\n",
			run.Bucket.Name, run.Bucket.Maximum, run.Bucket.Schedule, run.APILimit, ok, over, done, failed)
		prevAt = now
	}
}

// mutableHandler drops every record once muted.
type mutableHandler struct {
	slog.Handler
	muted atomic.Bool
}

func (h *mutableHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !h.muted.Load() && h.Handler.Enabled(ctx, l)
}

func (h *mutableHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &mutedView{h: h, Handler: h.Handler.WithAttrs(attrs)}
}

func (h *mutableHandler) WithGroup(name string) slog.Handler {
	return &mutedView{h: h, Handler: h.Handler.WithGroup(name)}
}

// mutedView is a derived handler that follows its root's muting.
type mutedView struct {
	slog.Handler
	h *mutableHandler
}

func (v *mutedView) Enabled(ctx context.Context, l slog.Level) bool {
	return !v.h.muted.Load() && v.Handler.Enabled(ctx, l)
}

func (v *mutedView) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &mutedView{h: v.h, Handler: v.Handler.WithAttrs(attrs)}
}

func (v *mutedView) WithGroup(name string) slog.Handler {
	return &mutedView{h: v.h, Handler: v.Handler.WithGroup(name)}
}

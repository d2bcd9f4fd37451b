package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

type workerCommand struct {
	g         *globals
	taskQueue string
	metrics   metricsFlag
}

func newWorkerCommand(g *globals) *cobra.Command {
	w := &workerCommand{g: g}
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker for the bucket and refill workflows",
		Long: `worker polls the tb task queue and runs the bucket and refill workflows. Run at
least one wherever buckets should be served; the activities it rate-limits run on
your own workers, which register the tb interceptor. With --metrics-address it
serves the SDK's metrics and the buckets' (tb_bucket_*) for Prometheus to scrape.`,
		RunE: w.run,
	}
	cmd.Flags().StringVar(&w.taskQueue, "task-queue", workflows.TaskQueue, "task queue to poll")
	cmd.Flags().StringVar(&w.metrics.address, "metrics-address", "", metricsUsage+" (e.g. 127.0.0.1:9464)")
	return cmd
}

func (w *workerCommand) run(cmd *cobra.Command, _ []string) error {
	if err := bucket.CheckTaskQueue(w.taskQueue); err != nil {
		return usageError{fmt.Errorf("--task-queue %w", err)}
	}
	ctx := cmd.Context()
	opts, err := w.g.clientOptions()
	if err != nil {
		return err
	}
	logger := w.g.logger(slog.LevelInfo)
	m, err := w.metrics.serve(cmd.Flags().Changed("metrics-address"), logger)
	if err != nil {
		return err
	}
	if m != nil {
		defer m.Close()
		opts.MetricsHandler = m.Handler()
	}
	c, err := dial(ctx, opts, w.g.conn.connectTimeout, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	wk, err := startWorker(c, w.taskQueue)
	if err != nil {
		return err
	}
	fmt.Fprintf(w.g.io.Err, "tb worker polling task queue %q on %s (namespace %s); Ctrl-C to stop\n", w.taskQueue, opts.HostPort, opts.Namespace)
	if m != nil {
		fmt.Fprintf(w.g.io.Err, "metrics at %s\n", m.URL())
	}
	<-ctx.Done()
	wk.Stop()
	return nil
}

// startWorker starts a worker running the bucket and refill workflows.
func startWorker(c client.Client, taskQueue string) (worker.Worker, error) {
	w := worker.New(c, taskQueue, worker.Options{})
	workflows.Register(w)
	if err := w.Start(); err != nil {
		return nil, fmt.Errorf("starting the tb worker on task queue %q: %w", taskQueue, err)
	}
	return w, nil
}

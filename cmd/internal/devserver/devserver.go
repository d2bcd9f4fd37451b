// Package devserver runs an embedded, in-process Temporal server backed by SQLite, with an optional Web UI.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/server/temporal"
)

const (
	defaultAddress   = "127.0.0.1:7233"
	defaultNamespace = "default"

	// startTimeout bounds how long Start waits for the frontend (and the UI)
	// when the caller's context has no earlier deadline.
	startTimeout = 2 * time.Minute
	// pollInterval is how often Start re-checks a component that is not ready yet.
	pollInterval = 50 * time.Millisecond
)

// Options configures a Server.
type Options struct {
	// Address is the frontend's host:port. Default "127.0.0.1:7233". Port 0 picks a free port.
	// The host must be an IP address or "localhost" (which means 127.0.0.1).
	Address string
	// Namespace is registered at start. Default "default".
	Namespace string
	// DBFile is the SQLite file that keeps state across restarts; its directory is created if missing.
	// Ignored when Ephemeral.
	DBFile string
	// Ephemeral keeps everything in memory.
	Ephemeral bool
	// UIAddress is where the Temporal Web UI listens, e.g. "127.0.0.1:8233"; "" disables the UI.
	// Port 0 picks a free port.
	UIAddress string
	// Logger receives the server's logs; nil discards them.
	// Once Stop is called only error-level records are passed on.
	Logger *slog.Logger
	// DynamicConfig overrides the server's dynamic config, by key
	// (e.g. "worker.schedulerNamespaceStartWorkflowRPS").
	DynamicConfig map[string]any
}

// Server is a running Temporal server and, optionally, its Web UI.
type Server struct {
	address   string
	namespace string
	uiAddress string

	server temporal.Server
	ui     *uiserver.Server
	uiDone chan struct{} // closed when the UI's serving goroutine returns
	quiet  *atomic.Bool  // set by Stop to keep only error logs

	stopOnce sync.Once
	stopErr  error
}

// Start starts the server and returns once its frontend accepts clients (and the namespace exists).
// When UIAddress is set it also waits until the UI answers HTTP requests.
// ctx bounds that wait; if it ends first, the server is stopped and Start returns an error.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("devserver: start: %w", err)
	}
	cfg, err := resolve(opts)
	if err != nil {
		return nil, fmt.Errorf("devserver: %w", err)
	}
	srv, err := newTemporalServer(cfg)
	if err != nil {
		return nil, fmt.Errorf("devserver: %w", err)
	}
	if err := srv.Start(); err != nil {
		// Release whatever part of the server did start.
		cfg.quiet.Store(true)
		_ = srv.Stop()
		return nil, fmt.Errorf("devserver: start temporal server on %s: %w", cfg.frontend.String(), err)
	}
	s := &Server{
		address:   cfg.frontend.String(),
		namespace: cfg.namespace,
		server:    srv,
		quiet:     cfg.quiet,
	}

	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := waitForFrontend(ctx, cfg); err != nil {
		return nil, errors.Join(fmt.Errorf("devserver: %w", err), s.Stop())
	}

	if cfg.ui != nil {
		s.uiAddress = cfg.ui.String()
		s.ui = newUIServer(cfg)
		s.uiDone = make(chan struct{})
		go func() {
			defer close(s.uiDone)
			// Start blocks until Stop closes the UI server. It returns nil
			// then; any other failure makes the UI package exit the process.
			_ = s.ui.Start()
		}()
		if err := waitForUI(ctx, s.uiAddress); err != nil {
			return nil, errors.Join(fmt.Errorf("devserver: %w", err), s.Stop())
		}
	}
	return s, nil
}

// Address returns the host:port the frontend is bound to.
func (s *Server) Address() string { return s.address }

// Namespace returns the namespace registered at start.
func (s *Server) Namespace() string { return s.namespace }

// UIAddress returns the host:port the Web UI is bound to, or "" when the UI is disabled.
func (s *Server) UIAddress() string { return s.uiAddress }

// Stop stops the UI and the server. It is safe to call more than once; later
// calls return the first call's result.
//
// A few things the Temporal libraries never release stay allocated until the
// process exits: the SQLite connection (for an Ephemeral server, the whole
// in-memory database) and the retrying pollers of some of the server's
// system workers. They cost little, but a process that starts many servers
// accumulates them.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.quiet.Store(true)
		if s.ui != nil {
			s.ui.Stop()
			<-s.uiDone
		}
		if err := s.server.Stop(); err != nil {
			s.stopErr = fmt.Errorf("devserver: stop temporal server: %w", err)
		}
	})
	return s.stopErr
}

// waitForFrontend polls the frontend until it answers DescribeNamespace for
// the configured namespace.
func waitForFrontend(ctx context.Context, cfg *resolved) error {
	var lastErr error
	for {
		lastErr = describeNamespace(ctx, cfg)
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("frontend %s not ready: %w (last error: %w)", cfg.frontendDial, ctx.Err(), lastErr)
		case <-time.After(pollInterval):
		}
	}
}

func describeNamespace(ctx context.Context, cfg *resolved) error {
	attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.DialContext(attemptCtx, client.Options{
		HostPort:  cfg.frontendDial.String(),
		Namespace: cfg.namespace,
		Logger:    sdklog.NewStructuredLogger(cfg.logger),
	})
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	_, err = c.WorkflowService().DescribeNamespace(attemptCtx, &workflowservice.DescribeNamespaceRequest{
		Namespace: cfg.namespace,
	})
	if err != nil {
		return fmt.Errorf("describe namespace %q: %w", cfg.namespace, err)
	}
	return nil
}

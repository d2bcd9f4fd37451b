package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprometheus "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/opentelemetry"
)

// MetricsPath is where Metrics serves.
const MetricsPath = "/metrics"

// DefaultDevMetricsAddress is where tb dev serves metrics unless told
// otherwise: the port of the OpenTelemetry Prometheus exporter.
const DefaultDevMetricsAddress = "127.0.0.1:9464"

// timerBuckets are the upper bounds, in seconds, of the histogram every
// timer becomes: acquire latencies of a few milliseconds, refill lags of
// seconds, waits in the activity up to the interceptor's default MaxWait
// (2s), and retry delays up to an hour (an hourly bucket's next refill).
var timerBuckets = []float64{
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
}

// Metrics serves what a Temporal client's MetricsHandler records — the
// SDK's own metrics and tb's, the interceptor's and the bucket workflows' —
// at MetricsPath in the Prometheus text format, with the Go runtime's.
// Counters get the suffix _total, timers _seconds and the histogram series
// _bucket, _sum and _count.
type Metrics struct {
	handler  client.MetricsHandler
	provider *sdkmetric.MeterProvider
	server   *http.Server
	addr     net.Addr
}

// ServeMetrics listens on address (host:port) and serves until Close.
func ServeMetrics(address string, logger *slog.Logger) (*Metrics, error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("serving metrics: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprometheus.New(otelprometheus.WithRegisterer(reg), otelprometheus.WithoutScopeInfo(), otelprometheus.WithoutTargetInfo())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("serving metrics: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithView(sdkmetric.NewView(
		sdkmetric.Instrument{Kind: sdkmetric.InstrumentKindHistogram},
		sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: timerBuckets}},
	)))
	handler := opentelemetry.NewMetricsHandler(opentelemetry.MetricsHandlerOptions{
		Meter:                provider.Meter("tb"),
		UseMonotonicCounters: true, // Prometheus counters, not gauges
		OnError:              func(err error) { logger.Warn("Could not record a metric", "Error", err) },
	})
	mux := http.NewServeMux()
	mux.Handle(MetricsPath, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m := &Metrics{
		handler:  handler,
		provider: provider,
		server:   &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		addr:     ln.Addr(),
	}
	go func() {
		if err := m.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("Serving metrics stopped", "Error", err)
		}
	}()
	return m, nil
}

// Handler is the MetricsHandler to give client.Options.
func (m *Metrics) Handler() client.MetricsHandler { return m.handler }

// Addr is where Metrics listens.
func (m *Metrics) Addr() net.Addr { return m.addr }

// URL is the address of the metrics page.
func (m *Metrics) URL() string { return "http://" + m.addr.String() + MetricsPath }

// Close stops serving.
func (m *Metrics) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(m.server.Shutdown(ctx), m.provider.Shutdown(ctx))
}

// metricsFlag is --metrics-address.
type metricsFlag struct {
	address string
	// fallback: when the default address is taken, listen on a free port of its host.
	fallback bool
}

const metricsUsage = "serve the SDK's and tb's metrics at http://<host:port>" + MetricsPath + " in the Prometheus text format; empty: none"

// serve starts serving metrics as the flag says, or returns nil when it is empty.
func (f metricsFlag) serve(changed bool, logger *slog.Logger) (*Metrics, error) {
	if f.address == "" {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(f.address)
	if err != nil {
		return nil, usageError{fmt.Errorf("--metrics-address %q: %w", f.address, err)}
	}
	m, err := ServeMetrics(f.address, logger)
	if err != nil && f.fallback && !changed && errors.Is(err, syscall.EADDRINUSE) {
		return ServeMetrics(net.JoinHostPort(host, "0"), logger)
	}
	return m, err
}

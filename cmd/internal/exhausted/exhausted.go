// Package exhausted counts, by cause, the ResourceExhausted answers a
// Temporal client saw, for the end-to-end tests and the benchmarks.
package exhausted

import (
	"maps"
	"sync"

	"go.temporal.io/sdk/client"
)

// A Counter is a client.MetricsHandler (client.Options.MetricsHandler) that
// counts the ResourceExhausted answers the SDK saw, each retry included: the
// SDK retries them, so a caller sees them only as delay or a timeout.
type Counter struct {
	counts *counts
	cause  string
}

type counts struct {
	mu      sync.Mutex
	byCause map[string]int64
}

// New returns a Counter at zero.
func New() Counter { return Counter{counts: &counts{byCause: map[string]int64{}}} }

func (h Counter) WithTags(tags map[string]string) client.MetricsHandler {
	if c, ok := tags["cause"]; ok {
		h.cause = c
	}
	return h
}

func (h Counter) Counter(name string) client.MetricsCounter {
	// Updates are long-poll requests.
	if name == "temporal_request_resource_exhausted" || name == "temporal_long_request_resource_exhausted" {
		return counterFunc(func(d int64) {
			h.counts.mu.Lock()
			defer h.counts.mu.Unlock()
			h.counts.byCause[h.cause] += d
		})
	}
	return client.MetricsNopHandler.Counter(name)
}

func (h Counter) Gauge(name string) client.MetricsGauge { return client.MetricsNopHandler.Gauge(name) }

func (h Counter) Timer(name string) client.MetricsTimer { return client.MetricsNopHandler.Timer(name) }

// ByCause returns the answers counted, by cause.
func (h Counter) ByCause() map[string]int64 {
	h.counts.mu.Lock()
	defer h.counts.mu.Unlock()
	return maps.Clone(h.counts.byCause)
}

// Total returns the answers of every cause, and those by cause.
func (h Counter) Total() (int64, map[string]int64) {
	by := h.ByCause()
	var n int64
	for _, c := range by {
		n += c
	}
	return n, by
}

type counterFunc func(int64)

func (f counterFunc) Inc(d int64) { f(d) }

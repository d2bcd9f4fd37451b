package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/interceptor"
)

// A callFunc is one call of caller, through lim, under request ID id:
// granted says whether it got every token it asked for; a denial is no error.
type callFunc func(ctx context.Context, lim interceptor.Limiter, caller int, id string) (granted bool, err error)

// LoadRow is what loadCell measured: the grant rate of callers calling one
// after another, and the latency of their granted calls.
type LoadRow struct {
	// GrantsPerSec is the median of the per-second grant counts, and
	// MeanGrantsPerSec all grants over the measured time.
	GrantsPerSec     float64 `json:"grantsPerSec"`
	MeanGrantsPerSec float64 `json:"meanGrantsPerSec"`
	P50ms            float64 `json:"p50ms"`
	P99ms            float64 `json:"p99ms"`
	Errors           int     `json:"errors"`
	// Denied counts the calls answered but not granted.
	Denied            int   `json:"denied"`
	ResourceExhausted int64 `json:"resourceExhausted"`
}

// loadCell runs callers goroutines, spread over limiters, each making one
// call after another for dur after a warm-up; request IDs begin with cell,
// which must be new to the buckets called. The warm-up outlasts an
// Acquirer's start spread, in which its first update waits.
func loadCell(ctx context.Context, e *env, limiters []interceptor.Limiter, callers int, cell string, dur time.Duration, call callFunc) LoadRow {
	const warmup = interceptor.DefaultStartSpread + 500*time.Millisecond
	exhaustedBefore := e.resourceExhausted.Load()
	begin := time.Now()
	measureFrom, end := begin.Add(warmup), begin.Add(warmup+dur)
	runCtx, cancel := context.WithDeadline(ctx, end)
	defer cancel()

	var (
		mu       sync.Mutex
		lat      []time.Duration
		perSec   = make([]float64, int(dur/time.Second))
		failures int
		denied   int
		wg       sync.WaitGroup
	)
	for i := range callers {
		lim := limiters[i%len(limiters)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; runCtx.Err() == nil; n++ {
				start := time.Now()
				granted, err := call(runCtx, lim, i, fmt.Sprintf("%s-%d-%d", cell, i, n))
				done := time.Now()
				if done.After(end) || start.Before(measureFrom) {
					continue
				}
				mu.Lock()
				switch {
				case err != nil && !errors.Is(err, context.DeadlineExceeded):
					failures++
				case err == nil && granted:
					lat = append(lat, done.Sub(start))
					if s := int(done.Sub(measureFrom) / time.Second); s < len(perSec) {
						perSec[s]++
					}
				case err == nil:
					denied++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return LoadRow{
		GrantsPerSec:      median(perSec),
		MeanGrantsPerSec:  float64(len(lat)) / dur.Seconds(),
		P50ms:             ms(percentile(lat, 50)),
		P99ms:             ms(percentile(lat, 99)),
		Errors:            failures,
		Denied:            denied,
		ResourceExhausted: e.resourceExhausted.Load() - exhaustedBefore,
	}
}

// acquirers returns one Acquirer, with default options, per client.
func acquirers(clients []client.Client) ([]interceptor.Limiter, error) {
	lims := make([]interceptor.Limiter, len(clients))
	for i, c := range clients {
		var err error
		if lims[i], err = interceptor.NewAcquirer(c, interceptor.AcquirerOptions{}); err != nil {
			return nil, err
		}
	}
	return lims, nil
}

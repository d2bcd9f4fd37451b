package e2e_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/exhausted"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
)

// TestFleetComesBackTogether: 64 processes × 4 callers on one bucket fall
// idle together, then all ask at the same instant, three times. Without the
// idle spread (AcquirerOptions.IdleSpread: -1) that is 64 updates at once on
// one workflow: Temporal refuses those past 10 in flight and aborts the
// rest, and in 2 of 3 runs a round's callers waited 10 s and failed (12 and
// 90 of its 256). With it, every caller is answered within the spread and a
// round trip, without an error, and no refill is over-granted.
func TestFleetComesBackTogether(t *testing.T) {
	const (
		processes = 64
		callers   = 4
		rounds    = 3
		// The idle spread (64 processes: all of DefaultStartSpread) and
		// what is left of the server's answer on two busy cores.
		bound = interceptor.DefaultStartSpread + time.Second
	)
	s := testserver.NewServer(t)
	spec := bucket.Spec{Name: "comeback", Schedule: "@every 1s", Amount: 20, Maximum: 20}
	s.Sync(t, spec)
	exhausted := exhausted.New()
	var acqs []*interceptor.Acquirer
	for range processes {
		c := s.NewClientWithOptions(client.Options{Logger: log.NewStructuredLogger(slog.New(slog.DiscardHandler)), MetricsHandler: exhausted})
		acq, err := interceptor.NewAcquirer(c, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
		if err != nil {
			t.Fatal(err)
		}
		acqs = append(acqs, acq)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	windows := map[time.Time]int64{}
	for round := range rounds + 1 { // round 0 starts the processes (their start spread)
		var (
			mu      sync.Mutex
			lat     []time.Duration
			errs    []error
			granted int
			wg      sync.WaitGroup
		)
		gate := make(chan struct{})
		for p, acq := range acqs {
			for k := range callers {
				wg.Go(func() {
					<-gate
					start := time.Now()
					d, err := acq.Acquire(ctx, spec.Name, fmt.Sprintf("r%d-p%d-c%d", round, p, k), 1)
					mu.Lock()
					defer mu.Unlock()
					lat = append(lat, time.Since(start))
					switch {
					case err != nil:
						errs = append(errs, err)
					case d.Granted:
						granted++
						windows[d.LastRefill]++
					}
				})
			}
		}
		close(gate) // every caller at once
		wg.Wait()
		slices.Sort(lat)
		t.Logf("round %d: p50 %v, slowest %v; %d granted, %d errors; ResourceExhausted so far %v", round,
			lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), granted, len(errs), exhausted.ByCause())
		if len(errs) > 0 {
			t.Errorf("round %d: %d caller errors, the first: %v", round, len(errs), errs[0])
		}
		if round > 0 && lat[len(lat)-1] > bound {
			t.Errorf("round %d: the slowest caller waited %v; want at most %v", round, lat[len(lat)-1], bound)
		}
		if round < rounds {
			// The scenario, not a wait for an event: the whole fleet idle,
			// longer than a refused caller's comeback (the next refill and
			// up to 64 × 20 ms: 2.3 s) and the Acquirer's idle spell (1 s)
			// after it.
			time.Sleep(4 * time.Second)
		}
	}
	for w, n := range windows {
		if n > spec.Maximum {
			t.Errorf("%d grants drew on the refill of %s; it holds %d", n, w.Format("15:04:05.000"), spec.Maximum)
		}
	}
}

package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/tokenbucket/tb/cmd/internal/exhausted"
	"github.com/tokenbucket/tb/interceptor"
)

// ComebackRow is a fleet on one hot bucket falling idle together and then
// asking all at once, round after round: tb's Acquirer against the same
// Acquirer with no idle spread (AcquirerOptions.IdleSpread < 0, as tb was
// before it), each on a fresh server of its own.
type ComebackRow struct {
	Processes         int          `json:"processes"`
	CallersPerProcess int          `json:"callersPerProcess"`
	Rounds            int          `json:"rounds"`
	IdleSeconds       float64      `json:"idleSeconds"`
	TB                ComebackCell `json:"tb"`
	NoIdleSpread      ComebackCell `json:"noIdleSpread"`
}

// ComebackCell is what one mode of a ComebackRow measured, over the rounds
// after the first (which starts the processes, in their start spread).
type ComebackCell struct {
	Acquires int     `json:"acquires"`
	Granted  int64   `json:"granted"`
	P50ms    float64 `json:"p50ms"`
	P99ms    float64 `json:"p99ms"`
	MaxMs    float64 `json:"maxMs"`
	// SlowRounds counts the rounds whose slowest caller waited over 5 s.
	SlowRounds int   `json:"slowRounds"`
	Errors     int   `json:"errors"`
	OverGrant  int64 `json:"overGrant"`
	// ResourceExhausted and Aborted as in FleetCell, over the whole cell.
	ResourceExhausted int64 `json:"resourceExhausted"`
	Aborted           int64 `json:"aborted"`
}

// comebackSizes are the fleets the comeback scenario runs.
var comebackSizes = []int{16, 32, 64}

const comebackIdle = 4 * time.Second // longer than a refused caller's comeback (≤ 2.3 s here) and the Acquirer's idle spell (1 s) after it

func runComeback(ctx context.Context, cfg config) ([]ComebackRow, error) {
	const callers = 4
	rounds := cfg.scale(5, 10)
	var rows []ComebackRow
	for _, procs := range comebackSizes {
		row := ComebackRow{Processes: procs, CallersPerProcess: callers, Rounds: rounds, IdleSeconds: comebackIdle.Seconds()}
		for _, spread := range []time.Duration{0, -1} {
			cell, err := comebackOnce(ctx, procs, callers, rounds, spread)
			if err != nil {
				return nil, fmt.Errorf("%d processes, idle spread %v: %w", procs, spread, err)
			}
			mode := "tb"
			if spread < 0 {
				mode = "no idle spread"
			}
			cfg.logf("comeback: %d × %d, %s: %d acquires, p50 %.0fms p99 %.0fms max %.0fms, %d rounds over 5 s, %d granted, %d errors, over-grant %d, ResourceExhausted %d, %d updates aborted",
				procs, callers, mode, cell.Acquires, cell.P50ms, cell.P99ms, cell.MaxMs, cell.SlowRounds, cell.Granted, cell.Errors, cell.OverGrant, cell.ResourceExhausted, cell.Aborted)
			if spread < 0 {
				row.NoIdleSpread = cell
			} else {
				row.TB = cell
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// comebackOnce runs procs processes × callers on fleetSpec's bucket, on a
// fresh server: a first round, then rounds after comebackIdle with the whole
// fleet idle, each caller acquiring once, all at the same instant.
func comebackOnce(ctx context.Context, procs, callers, rounds int, idleSpread time.Duration) (ComebackCell, error) {
	runtime.GC()
	e, err := newEnv(ctx, true, nil)
	if err != nil {
		return ComebackCell{}, err
	}
	defer e.close()
	spec := fleetSpec
	if err := e.sync(ctx, spec); err != nil {
		return ComebackCell{}, err
	}
	if err := waitForRefill(ctx, e, spec.Name); err != nil {
		return ComebackCell{}, err
	}
	exhausted := exhausted.New()
	acqs := make([]*interceptor.Acquirer, procs)
	for i := range acqs {
		c, err := e.newClientWithMetrics(exhausted)
		if err != nil {
			return ComebackCell{}, err
		}
		if acqs[i], err = interceptor.NewAcquirer(c, interceptor.AcquirerOptions{IdleSpread: idleSpread}); err != nil {
			return ComebackCell{}, err
		}
	}
	var (
		cell    ComebackCell
		lat     []time.Duration
		windows = map[time.Time]int64{}
	)
	for round := range rounds + 1 {
		if round > 0 {
			select {
			case <-ctx.Done():
				return ComebackCell{}, ctx.Err()
			case <-time.After(comebackIdle):
			}
		}
		var (
			mu      sync.Mutex
			slowest time.Duration
			wg      sync.WaitGroup
		)
		gate := make(chan struct{})
		for p, acq := range acqs {
			for k := range callers {
				wg.Go(func() {
					<-gate
					start := time.Now()
					d, err := acq.Acquire(ctx, spec.Name, fmt.Sprintf("r%d-p%d-c%d", round, p, k), 1)
					took := time.Since(start)
					mu.Lock()
					defer mu.Unlock()
					slowest = max(slowest, took)
					if err == nil && d.Granted {
						windows[d.LastRefill.UTC()]++
					}
					if round == 0 {
						return
					}
					cell.Acquires++
					lat = append(lat, took)
					switch {
					case err != nil:
						cell.Errors++
					case d.Granted:
						cell.Granted++
					}
				})
			}
		}
		close(gate)
		wg.Wait()
		if round > 0 && slowest > 5*time.Second {
			cell.SlowRounds++
		}
	}
	most := int64(0)
	for _, n := range windows {
		most = max(most, n)
	}
	cell.OverGrant = most - spec.Maximum
	cell.P50ms, cell.P99ms, cell.MaxMs = ms(percentile(lat, 50)), ms(percentile(lat, 99)), ms(percentile(lat, 100))
	cell.ResourceExhausted, _ = exhausted.Total()
	cell.Aborted = e.updatesAborted.Load()
	return cell, nil
}

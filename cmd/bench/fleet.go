package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/exhausted"
	"github.com/tokenbucket/tb/interceptor"
)

// FleetRow is a fleet of acquiring processes on one hot bucket, tb's
// Acquirer against the per-process acquirer tb had before, each on a fresh
// server of its own.
type FleetRow struct {
	Processes         int       `json:"processes"`
	CallersPerProcess int       `json:"callersPerProcess"`
	Seconds           float64   `json:"seconds"`
	TB                FleetCell `json:"tb"`
	PerProcess        FleetCell `json:"perProcess"`
}

// FleetCell is what one mode of a FleetRow measured.
type FleetCell struct {
	Acquires int   `json:"acquires"` // answered: granted, denied or failed
	Granted  int64 `json:"granted"`
	// Supply is the tokens the bucket offered over the run: its maximum
	// (it starts full) plus amount for every tick in the run; Share is
	// Granted over Supply.
	Supply int64   `json:"supply"`
	Share  float64 `json:"share"`
	P50ms  float64 `json:"p50ms"` // latency of every answered Acquire
	P99ms  float64 `json:"p99ms"`
	// SteadyP99ms is the p99 of the acquires started after the first
	// interceptor.DefaultStartSpread of the run, in which each process's
	// first update waits a random part of it by design.
	SteadyP99ms float64 `json:"steadyP99ms"`
	Errors      int     `json:"errors"` // errors callers got
	// OverGrant is the most grants drawing on one refill (by
	// Decision.LastRefill) minus the bucket's maximum; above 0 is an over-grant.
	OverGrant int64 `json:"overGrant"`
	// ResourceExhausted counts the server's ResourceExhausted answers to
	// the fleet's clients, as the SDK's metrics count them.
	ResourceExhausted        int64            `json:"resourceExhausted"`
	ResourceExhaustedByCause map[string]int64 `json:"resourceExhaustedByCause,omitempty"`
	// Aborted counts the updates in flight the server aborted ("workflow
	// update was aborted", from its log): it retries them itself, so no
	// client sees them, but they are sent to the bucket again.
	Aborted int64 `json:"aborted"`
	// LongestStallMs is the longest stretch of the run without a grant.
	LongestStallMs float64 `json:"longestStallMs"`
	// ContinuedAsNew counts the bucket's continue-as-new boundaries in the run.
	ContinuedAsNew int `json:"continuedAsNew"`
	// GrantsBySecond counts the grants in each second of the run.
	GrantsBySecond []int64 `json:"grantsBySecond"`
}

// The goal at the largest fleet: callers answered quickly, the bucket's
// supply granted, no caller error, no over-grant.
const (
	fleetGoalProcesses = 64
	fleetGoalP99       = 250 * time.Millisecond
	fleetGoalShare     = 0.90
)

var fleetSpec = bucket.Spec{Name: "fleet", Schedule: "@every 1s", Amount: 20, Maximum: 20}

// fleetSizes are the fleets the scenario runs (-fleet-processes).
var fleetSizes = []int{8, 16, 32, fleetGoalProcesses}

func runFleet(ctx context.Context, cfg config) ([]FleetRow, error) {
	const callers = 4
	dur := time.Duration(cfg.scale(10, 25)) * time.Second
	var rows []FleetRow
	for _, procs := range fleetSizes {
		row := FleetRow{Processes: procs, CallersPerProcess: callers, Seconds: dur.Seconds()}
		for _, mode := range []string{"tb", "per-process"} {
			cell, err := fleetOnce(ctx, mode, procs, callers, dur)
			if err != nil {
				return nil, fmt.Errorf("%d processes, %s: %w", procs, mode, err)
			}
			cfg.logf("fleet: %d × %d %s: %d acquires, p50 %.0fms p99 %.0fms (%.0fms after the start spread), %d of %d granted (%.0f%%), %d errors, over-grant %d, ResourceExhausted %d %v, %d updates aborted, longest without a grant %.1fs, %d continue-as-new; grants by second %v",
				procs, callers, mode, cell.Acquires, cell.P50ms, cell.P99ms, cell.SteadyP99ms, cell.Granted, cell.Supply, 100*cell.Share, cell.Errors, cell.OverGrant,
				cell.ResourceExhausted, cell.ResourceExhaustedByCause, cell.Aborted, cell.LongestStallMs/1000, cell.ContinuedAsNew, cell.GrantsBySecond)
			if mode == "tb" {
				row.TB = cell
			} else {
				row.PerProcess = cell
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// fleetOnce runs procs processes (separate clients, each with its own
// limiter) × callers on fleetSpec's bucket for dur, on a fresh server.
// Each caller acquires one token, and when denied comes back after the
// RetryAfter it was told; after an error, after a second (as an activity's
// first retry would).
func fleetOnce(ctx context.Context, mode string, procs, callers int, dur time.Duration) (FleetCell, error) {
	runtime.GC() // what the cells before left is not this cell's load
	e, err := newEnv(ctx, true, nil)
	if err != nil {
		return FleetCell{}, err
	}
	defer e.close()
	spec := fleetSpec
	if err := e.sync(ctx, spec); err != nil {
		return FleetCell{}, err
	}
	// Start once the Schedule is refilling the (full) bucket.
	if err := waitForRefill(ctx, e, spec.Name); err != nil {
		return FleetCell{}, err
	}
	exhausted := exhausted.New()
	limiters := make([]interceptor.Limiter, procs)
	for i := range limiters {
		c, err := e.newClientWithMetrics(exhausted)
		if err != nil {
			return FleetCell{}, err
		}
		if mode == "tb" {
			if limiters[i], err = interceptor.NewAcquirer(c, interceptor.AcquirerOptions{}); err != nil {
				return FleetCell{}, err
			}
		} else {
			limiters[i] = newPerProcess(c)
		}
	}

	var (
		mu      sync.Mutex
		cell    FleetCell
		lat     []time.Duration
		steady  []time.Duration         // of the acquires started after the start spread
		windows = map[time.Time]int64{} // grants by the refill they drew on
		grants  []time.Time
		wg      sync.WaitGroup
	)
	begin := time.Now()
	cell.GrantsBySecond = make([]int64, int((dur+time.Second-1)/time.Second))
	runCtx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	for p, lim := range limiters {
		for k := range callers {
			wg.Go(func() {
				for i := 0; runCtx.Err() == nil; i++ {
					start := time.Now()
					d, err := lim.Acquire(runCtx, spec.Name, fmt.Sprintf("p%d-c%d-%d", p, k, i), 1)
					if err != nil && runCtx.Err() != nil && errors.Is(err, runCtx.Err()) {
						return // cut off by the end of the run
					}
					mu.Lock()
					cell.Acquires++
					lat = append(lat, time.Since(start))
					if start.Sub(begin) >= interceptor.DefaultStartSpread {
						steady = append(steady, time.Since(start))
					}
					wait := time.Duration(0)
					switch {
					case err != nil:
						cell.Errors++
						wait = time.Second
					case d.Granted:
						cell.Granted++
						windows[d.LastRefill.UTC()]++
						grants = append(grants, time.Now())
						if s := int(time.Since(begin) / time.Second); s < len(cell.GrantsBySecond) {
							cell.GrantsBySecond[s]++
						}
					default:
						wait = d.RetryAfter
					}
					mu.Unlock()
					if wait > 0 {
						select {
						case <-runCtx.Done():
						case <-time.After(wait):
						}
					}
				}
			})
		}
	}
	wg.Wait()
	end := begin.Add(dur)

	ticks := int64(0)
	sched, err := spec.ParseSchedule()
	if err != nil {
		return FleetCell{}, err
	}
	for t := sched.Next(begin); !t.After(end); t = sched.Next(t) {
		ticks++
	}
	cell.Supply = spec.Maximum + ticks*spec.Amount
	cell.Share = float64(cell.Granted) / float64(cell.Supply)
	most := int64(0)
	for _, n := range windows {
		most = max(most, n)
	}
	cell.OverGrant = most - spec.Maximum
	cell.P50ms, cell.P99ms = ms(percentile(lat, 50)), ms(percentile(lat, 99))
	cell.SteadyP99ms = ms(percentile(steady, 99))
	cell.ResourceExhausted, cell.ResourceExhaustedByCause = exhausted.Total()
	cell.Aborted = e.updatesAborted.Load()
	slices.SortFunc(grants, time.Time.Compare)
	last, stall := begin, time.Duration(0)
	for _, g := range append(grants, end) {
		stall, last = max(stall, g.Sub(last)), g
	}
	cell.LongestStallMs = ms(stall)
	// From visibility, not the bucket: a bucket stalled by the fleet may
	// not answer a query for a while.
	ends, err := runEnds(ctx, e, spec.Name, 0)
	if err != nil {
		return FleetCell{}, err
	}
	cell.ContinuedAsNew = len(ends)
	return cell, nil
}

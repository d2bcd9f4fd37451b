package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// RefillResult is how late one bucket's ticks were applicable, read from
// its history after it ran with its Schedule for a while: by the arrival of
// each tick's own refill signal (what the bucket did before refills
// authorized the ticks after them), and as it is now, from the arrival of
// the earliest signal that authorizes it (see arrivals.effectiveLag).
type RefillResult struct {
	Schedule string  `json:"schedule"`
	Seconds  float64 `json:"seconds"` // how long the bucket ran
	// SchedulePhase is the fraction of a second, in seconds, the Schedule
	// was created at: its refill workflows start near that phase, drifting.
	SchedulePhase float64 `json:"schedulePhase"`
	Ticks         int     `json:"ticks"`   // ticks with a refill signal
	Missing       int     `json:"missing"` // ticks in that span without one
	SignalP50ms   float64 `json:"signalP50ms"`
	SignalP99ms   float64 `json:"signalP99ms"`
	SignalMaxms   float64 `json:"signalMaxms"`
	// Effective lags: when the tick became applicable, each refill
	// authorizing the ticks within bucket.AuthorizeLead after it
	// (arrivals.effectiveLag); and had each authorized the next tick alone,
	// as builds before the authorize-lead change do.
	EffectiveP50ms float64 `json:"effectiveP50ms"`
	EffectiveP99ms float64 `json:"effectiveP99ms"`
	EffectiveMaxms float64 `json:"effectiveMaxms"`
	NextOnlyP99ms  float64 `json:"nextOnlyP99ms"`
	NextOnlyMaxms  float64 `json:"nextOnlyMaxms"`
}

// refillGoalP99 is the goal for the effective lag's p99.
const refillGoalP99 = 100 * time.Millisecond

func runRefill(ctx context.Context, cfg config) (*RefillResult, error) {
	e, err := newEnv(ctx, true, nil)
	if err != nil {
		return nil, err
	}
	defer e.close()
	spec := bucket.Spec{Name: "refill", Schedule: "@every 1s", Amount: 1, Maximum: 1}
	sched, err := spec.ParseSchedule()
	if err != nil {
		return nil, err
	}
	res := &RefillResult{Schedule: spec.Schedule}
	if err := e.sync(ctx, spec); err != nil {
		return nil, err
	}
	if res.SchedulePhase, err = schedulePhase(ctx, e, spec.Name); err != nil {
		return nil, err
	}
	run := time.Duration(cfg.scale(2, 5)) * time.Minute
	cfg.logf("refill: the bucket runs with its Schedule for %v", run)
	begin := time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(run):
	}
	res.Seconds = time.Since(begin).Seconds()
	st, err := e.state(ctx, spec.Name)
	if err != nil {
		return nil, err
	}
	if st.Until.IsZero() {
		return nil, errors.New("the bucket applies no tick by itself (no refill authorized one): its effective lag would not be what it does")
	}
	got, err := refillArrivals(ctx, e.c, spec.Name)
	if err != nil {
		return nil, err
	}
	signal, effective, missing := got.tickLags(sched, bucket.AuthorizeLead)
	_, nextOnly, _ := got.tickLags(sched, 0)
	if len(signal) == 0 {
		return nil, fmt.Errorf("no refill signal in %v", run)
	}
	res.Ticks, res.Missing = len(signal), missing
	res.SignalP50ms, res.SignalP99ms, res.SignalMaxms = ms(percentile(signal, 50)), ms(percentile(signal, 99)), ms(percentile(signal, 100))
	res.EffectiveP50ms, res.EffectiveP99ms, res.EffectiveMaxms = ms(percentile(effective, 50)), ms(percentile(effective, 99)), ms(percentile(effective, 100))
	res.NextOnlyP99ms, res.NextOnlyMaxms = ms(percentile(nextOnly, 99)), ms(percentile(nextOnly, 100))
	cfg.logf("refill: %d ticks (%d without a signal), Schedule created %.2fs past a second; signal lag p50 %.0fms p99 %.0fms max %.0fms; effective lag p50 %.0fms p99 %.0fms max %.0fms",
		res.Ticks, res.Missing, res.SchedulePhase, res.SignalP50ms, res.SignalP99ms, res.SignalMaxms, res.EffectiveP50ms, res.EffectiveP99ms, res.EffectiveMaxms)
	return res, nil
}

// schedulePhase returns the fraction of a second, in seconds, at which the
// named bucket's Schedule was created.
func schedulePhase(ctx context.Context, e *env, name string) (float64, error) {
	d, err := e.c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(name)).Describe(ctx)
	if err != nil {
		return 0, err
	}
	created := d.Info.CreatedAt
	return created.Sub(created.Truncate(time.Second)).Seconds(), nil
}

package main

import (
	"context"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// arrivals maps a scheduled tick (in UTC) to when its refill signal
// reached the bucket: the signal's event time in the bucket's history.
type arrivals map[time.Time]time.Time

// refillArrivals reads the named bucket's history, every run of it
// (following continue-as-new back from the current run), and returns when
// the first refill signal of each scheduled tick arrived.
func refillArrivals(ctx context.Context, c client.Client, name string) (arrivals, error) {
	got := arrivals{}
	dc := converter.GetDefaultDataConverter()
	for runID := ""; ; {
		it := c.GetWorkflowHistory(ctx, workflows.BucketID(name), runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		previous := ""
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				return nil, fmt.Errorf("bucket %q: history: %w", name, err)
			}
			if a := ev.GetWorkflowExecutionStartedEventAttributes(); a != nil {
				previous = a.GetContinuedExecutionRunId()
			}
			a := ev.GetWorkflowExecutionSignaledEventAttributes()
			if a == nil || a.GetSignalName() != workflows.RefillSignal {
				continue
			}
			var r workflows.Refill
			if err := dc.FromPayloads(a.GetInput(), &r); err != nil {
				return nil, fmt.Errorf("bucket %q: refill signal %d: %w", name, ev.GetEventId(), err)
			}
			if r.Tick.IsZero() {
				continue // a manual refill
			}
			tick, at := r.Tick.UTC(), ev.GetEventTime().AsTime()
			if first, ok := got[tick]; !ok || at.Before(first) {
				got[tick] = at
			}
		}
		if previous == "" {
			return got, nil
		}
		runID = previous
	}
}

// signalLag is how long after tick its refill signal arrived: when a bucket
// applied the tick before refills authorized the next one.
func (a arrivals) signalLag(tick time.Time) (time.Duration, bool) {
	at, ok := a[tick.UTC()]
	return at.Sub(tick), ok
}

// effectiveLag is how long after tick the bucket could apply it when each
// scheduled refill authorizes the ticks within lead after it, and always
// the next one (bucket.Authorize with lead bucket.AuthorizeLead;
// bucket.AuthorizeNext with lead 0): once the refill of prev (the tick
// before it) or of any tick of sched within lead before it has arrived, and
// at the latest when its own does. A tick with no such signal counts with
// its own signal lag.
func (a arrivals) effectiveLag(sched *bucket.Schedule, lead time.Duration, prev, tick time.Time) (time.Duration, bool) {
	own, ownOK := a.signalLag(tick)
	var first time.Time // the earliest arrival of a refill authorizing tick
	note := func(e time.Time) {
		if at, ok := a[e.UTC()]; ok && !e.IsZero() && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	note(prev)
	for e := sched.Next(tick.Add(-lead - 1)); lead > 0 && !e.IsZero() && e.Before(tick); e = sched.Next(e) {
		note(e)
	}
	if first.IsZero() {
		return own, ownOK
	}
	lag := max(first.Sub(tick), 0)
	if ownOK {
		lag = min(lag, own)
	}
	return lag, true
}

// tickLags returns the signal and effective lags (refills authorizing the
// ticks within lead after them) of every tick of sched
// from the first to the last tick a refill signal arrived for, and how
// many ticks in that span have no signal (and so no lags).
func (a arrivals) tickLags(sched *bucket.Schedule, lead time.Duration) (signal, effective []time.Duration, missing int) {
	var first, last time.Time
	for t := range a {
		if first.IsZero() || t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
	}
	var prev time.Time
	for t := first; !t.IsZero() && !t.After(last); prev, t = t, sched.Next(t) {
		s, ok := a.signalLag(t)
		if !ok {
			missing++
			continue
		}
		eff, _ := a.effectiveLag(sched, lead, prev, t)
		signal, effective = append(signal, s), append(effective, eff)
	}
	return signal, effective, missing
}

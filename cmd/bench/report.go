package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

func printMarkdown(w io.Writer, r *Report) {
	fmt.Fprintf(w, "# tb benchmarks\n\n%s; embedded Temporal server (SQLite in memory) in the same process; run took %.0fs%s.\n\n",
		r.Machine, r.Seconds, map[bool]string{true: " (-long)", false: ""}[r.Long])

	if len(r.Overhead) > 0 {
		fmt.Fprintf(w, "## Overhead: one no-op guarded activity, plenty of tokens, against the interceptor off\n\n")
		fmt.Fprintf(w, "| concurrent workflows | pause between | workflows × reps | off p50 / p99 | tb p50 / p99 | **tb ÷ off** p50 / p99 | tb with lease p50 / p99 | **lease ÷ off** p50 / p99 | results late by the 20 s long poll (off / tb / lease) |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, o := range r.Overhead {
			fmt.Fprintf(w, "| %d | %.0f ms | %d × %d | %.1f / %.1f ms | %.1f / %.1f ms | **%.2f×** / %.2f× | %.1f / %.1f ms | **%.2f×** / %.2f× | %d / %d / %d |\n",
				o.Concurrency, o.PauseMs, o.Workflows, o.Reps, o.OffP50ms, o.OffP99ms, o.OnP50ms, o.OnP99ms, o.RatioP50, o.RatioP99,
				o.LeaseP50ms, o.LeaseP99ms, o.LeaseRatioP50, o.LeaseRatioP99, o.SlowOff, o.SlowOn, o.SlowLease)
		}
		fmt.Fprintf(w, "\nLatency runs from the client's start call to the close the server recorded. Ratios are medians of per-repetition ratios; the modes rotate order between repetitions. The lease is AcquirerOptions.Lease = %d.\n", overheadLease)
		fmt.Fprintln(w)
	}
	if len(r.Throughput) > 0 {
		fmt.Fprintf(w, "## Grant throughput of one bucket: callers on the acquirer directly\n\n")
		fmt.Fprintf(w, "| processes | callers | one update per call: grants/s (mean) | p99 | tb: grants/s (mean) | p99 | **tb ÷ per-call** | ResourceExhausted (per-call / tb) | errors (per-call / tb) |\n|---|---|---|---|---|---|---|---|---|\n")
		for i := 0; i+1 < len(r.Throughput); i += 2 {
			u, b := r.Throughput[i], r.Throughput[i+1]
			ratio := fmt.Sprintf("**%.1f×**", b.VsUnbatched)
			if b.VsUnbatched == 0 {
				ratio = "**∞** (per-call granted nothing)"
			}
			fmt.Fprintf(w, "| %d | %d | %.0f (%.0f) | %s | %.0f (%.0f) | %s | %s | %d / %d | %d / %d |\n",
				b.Processes, b.Callers, u.GrantsPerSec, u.MeanGrantsPerSec, latency(u.P99ms), b.GrantsPerSec, b.MeanGrantsPerSec, latency(b.P99ms), ratio,
				u.ResourceExhausted, b.ResourceExhausted, u.Errors, b.Errors)
		}
		fmt.Fprintln(w, "\nGrants per second: the median of one-second windows, and in brackets the mean over the run, which the ratio uses; p99 is the acquire latency of the granted calls.")
		fmt.Fprintln(w)
	}
	if len(r.Drain) > 0 {
		fmt.Fprintf(w, "## Backlog drain: %d activities queued at once, bucket @every 1s, amount 10, maximum 10\n\n", r.Drain[0].Activities)
		fmt.Fprintf(w, "| limiter | drain | ideal | **drain ÷ ideal** | first activity after | denials per grant | acquire updates per grant | attempts per activity | most starts in a refill window − tokens | same, 1 s clock windows |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, d := range r.Drain {
			window := "n/a"
			if d.OverRefillWindow != nil {
				window = fmt.Sprint(*d.OverRefillWindow)
			}
			fmt.Fprintf(w, "| %s | %.1f s | %.0f s | **%.2f×** | %.2f s | %.2f | %.2f | %.2f | %s | %d |\n",
				d.Limiter, d.DrainSec, d.IdealSec, d.VsIdeal, d.FirstSec, d.DenialsPerGrant, d.UpdatesPerGrant, d.AttemptsPerActivity, window, d.OverClockWindow)
		}
		fmt.Fprintf(w, "\nMedians of %d repetition(s). fixed-5s retries a denied activity after 5 s, as the Celery package's countdown; task-queue-rps is Temporal's TaskQueueActivitiesPerSecond = 10 on a dedicated task queue, with no bucket.\n\n", r.Drain[0].Reps)
	}
	if len(r.DrainPhases) > 0 {
		p0 := r.DrainPhases[0]
		fmt.Fprintf(w, "### tb's drain of %d by the phase of the bucket's Schedule\n\n", p0.Activities)
		fmt.Fprintf(w, "| Schedule created (aimed / was, s past a second) | drain | ideal | **drain ÷ ideal** | refill signal lag p50 / p99 (each tick waiting for its own) | effective lag p99, the next tick alone authorized (v0.3.0) | effective lag p50 / p99 (now) | first activity after | rest of the drain ÷ ideal | tokens left unused | most starts in a refill window − tokens | same, 1 s clock windows |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		worst, worstAfter, unused := 0.0, 0.0, 0
		for _, d := range r.DrainPhases {
			worst, worstAfter, unused = max(worst, d.VsIdeal), max(worstAfter, d.AfterFirstVsIdeal), unused+d.UnusedTokens
			fmt.Fprintf(w, "| %.2f / %.2f | %.1f s | %.0f s | **%.2f×** | %.0f / %.0f ms | %.0f ms | %.0f / %.0f ms | %.2f s | %.2f× | %d | %d | %d |\n",
				d.TargetPhase, d.SchedulePhase, d.DrainSec, d.IdealSec, d.VsIdeal, d.SignalP50ms, d.SignalP99ms, d.NextOnlyP99ms, d.EffectiveP50ms, d.EffectiveP99ms,
				d.FirstSec, d.AfterFirstVsIdeal, d.UnusedTokens, d.OverRefillWindow, d.OverClockWindow)
		}
		fmt.Fprintf(w, "\nOne run per phase. First activity after: from the backlog being queued to the first activity running. Rest of the drain: from then to the last. Tokens left unused: of the refill windows from the first one granted in to the last, those no activity used. Goal: drain ÷ ideal ≤ %.2f× at every phase — %s; the rest of the drain at most %.2f× ideal, %d tokens left unused in all.\n\n",
			drainGoal, verdict(worst <= drainGoal, fmt.Sprintf("worst %.2f×", worst)), worstAfter, unused)
	}
	if c := r.CAN; c != nil {
		fmt.Fprintf(w, "## Continue-as-new under load: %d callers, a new run every %d updates\n\n", c.Callers, c.MaxUpdatesPerRun)
		fmt.Fprintf(w, "| seconds | boundaries | acquires | errors | granted | deducted | bucket counts | p50 | p99 | spanning a boundary: n, p50 / p99 | others: p99 |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		fmt.Fprintf(w, "| %.0f | %d | %d | %d | %d | %d | %d | %.1f ms | %.1f ms | %d, %.0f / %.0f ms | %.1f ms |\n\n",
			c.Seconds, c.Boundaries, c.Acquires, c.Errors, c.GrantedTokens, c.DeductedTokens, c.BucketGranted, c.P50ms, c.P99ms,
			c.Spanning, c.BoundaryP50ms, c.BoundaryP99ms, c.AwayP99ms)
	}
	if len(r.Fleet) > 0 {
		f0 := r.Fleet[0]
		fmt.Fprintf(w, "## Fleets on one hot bucket: processes × %d callers, bucket %s, amount %d, maximum %d, %.0f s per mode\n\n",
			f0.CallersPerProcess, fleetSpec.Schedule, fleetSpec.Amount, fleetSpec.Maximum, f0.Seconds)
		fmt.Fprintf(w, "| processes × callers | acquires (tb / per-process) | p50 (tb / per-process) | p99 (tb / per-process) | **p99 after the start spread** (tb / per-process) | share of supply (tb / per-process) | caller errors (tb / per-process) | over-grant (tb / per-process) | ResourceExhausted (tb / per-process) | updates aborted (tb / per-process) | longest without a grant (tb / per-process) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, f := range r.Fleet {
			t, p := f.TB, f.PerProcess
			fmt.Fprintf(w, "| %d × %d | %d / %d | %s / %s | %s / %s | **%s** / %s | %.0f%% / %.0f%% | %d / %d | %d / %d | %d / %d | %d / %d | %.1f / %.1f s |\n",
				f.Processes, f.CallersPerProcess, t.Acquires, p.Acquires, latency(t.P50ms), latency(p.P50ms), latency(t.P99ms), latency(p.P99ms), latency(t.SteadyP99ms), latency(p.SteadyP99ms),
				100*t.Share, 100*p.Share, t.Errors, p.Errors, t.OverGrant, p.OverGrant, t.ResourceExhausted, p.ResourceExhausted,
				t.Aborted, p.Aborted, t.LongestStallMs/1000, p.LongestStallMs/1000)
		}
		fmt.Fprintf(w, "\nEach mode runs on a fresh server. Latency is every answered Acquire's (grants and denials); share of supply is tokens granted ÷ (maximum + ticks × amount) over the run; over-grant is the most grants drawing on one refill (Decision.LastRefill) minus the maximum (must be ≤ 0); ResourceExhausted counts the server's answers to the fleet's clients, SDK retries included; updates aborted counts the updates in flight the server aborted (its log says \"workflow update was aborted\"; it retries them itself); longest without a grant is the longest stretch of the run in which no caller was granted a token. per-process is tb's acquirer before it cooperated across processes (one update in flight per bucket per process, retried in 2 s tries). Every process starts at once; tb's Acquirer sends each its first update after a random part of interceptor.DefaultStartSpread (%v), so the p99 of the whole run is at least most of that, and the p99 after the start spread is of the acquires started after it.\n\n", interceptor.DefaultStartSpread)
		for _, f := range r.Fleet {
			if f.Processes != fleetGoalProcesses {
				continue
			}
			t := f.TB
			var missed []string
			if t.SteadyP99ms > ms(fleetGoalP99) {
				missed = append(missed, fmt.Sprintf("p99 %.0f ms after the start spread", t.SteadyP99ms))
			}
			if t.Share < fleetGoalShare {
				missed = append(missed, fmt.Sprintf("%.0f%% of supply", 100*t.Share))
			}
			if t.Errors > 0 {
				missed = append(missed, fmt.Sprintf("%d caller errors", t.Errors))
			}
			if t.OverGrant > 0 {
				missed = append(missed, fmt.Sprintf("over-grant %d", t.OverGrant))
			}
			fmt.Fprintf(w, "Goal for tb at %d processes: p99 ≤ %v after the start spread, ≥ %.0f%% of supply, 0 caller errors, 0 over-grant — %s. The p99 of the whole run, start spread included, is %.0f ms.\n\n",
				fleetGoalProcesses, fleetGoalP99, 100*fleetGoalShare, verdict(len(missed) == 0, strings.Join(missed, ", ")), t.P99ms)
		}
	}
	if len(r.Comeback) > 0 {
		c0 := r.Comeback[0]
		fmt.Fprintf(w, "## A fleet asking again at once after an idle spell: processes × %d callers, bucket %s, amount %d, maximum %d; %d rounds, each after %.1f s with the whole fleet idle\n\n",
			c0.CallersPerProcess, fleetSpec.Schedule, fleetSpec.Amount, fleetSpec.Maximum, c0.Rounds, c0.IdleSeconds)
		fmt.Fprintf(w, "| processes × callers | p50 (tb / no idle spread) | p99 (tb / no idle spread) | **slowest** (tb / no idle spread) | rounds with a caller over 5 s (tb / no idle spread) | caller errors (tb / no idle spread) | granted (tb / no idle spread) | over-grant (tb / no idle spread) | ResourceExhausted (tb / no idle spread) | updates aborted (tb / no idle spread) |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, c := range r.Comeback {
			t, n := c.TB, c.NoIdleSpread
			fmt.Fprintf(w, "| %d × %d | %s / %s | %s / %s | **%s** / %s | %d / %d | %d / %d | %d / %d | %d / %d | %d / %d | %d / %d |\n",
				c.Processes, c.CallersPerProcess, latency(t.P50ms), latency(n.P50ms), latency(t.P99ms), latency(n.P99ms), latency(t.MaxMs), latency(n.MaxMs),
				t.SlowRounds, n.SlowRounds, t.Errors, n.Errors, t.Granted, n.Granted, t.OverGrant, n.OverGrant, t.ResourceExhausted, n.ResourceExhausted, t.Aborted, n.Aborted)
		}
		fmt.Fprintf(w, "\nEach mode runs on a fresh server; a first round starts the processes (in their start spread) and is not counted. In each round every caller acquires one token, all at the same instant. no idle spread is tb's Acquirer with AcquirerOptions.IdleSpread < 0, as it was before the bucket counted the processes that ask it: the fleet's updates reach the bucket at once. Latency is every answered Acquire's, errors included (a caller gives up after the Acquirer's timeout, %v).\n\n", interceptor.DefaultAcquireTimeout)
	}
	if f := r.Refill; f != nil {
		fmt.Fprintf(w, "## Refills on the tick: one bucket %s with its Schedule for %.0f s, read from its history\n\n", f.Schedule, f.Seconds)
		fmt.Fprintf(w, "| ticks | without a signal | Schedule created (s past a second) | signal lag p50 / p99 / max (each tick waiting for its own) | effective lag p99 / max, the next tick alone authorized (v0.3.0) | **effective lag** p50 / p99 / max (now) |\n|---|---|---|---|---|---|\n")
		fmt.Fprintf(w, "| %d | %d | %.2f | %.0f / %.0f / %.0f ms | %.0f / %.0f ms | **%.0f / %.0f / %.0f ms** |\n",
			f.Ticks, f.Missing, f.SchedulePhase, f.SignalP50ms, f.SignalP99ms, f.SignalMaxms, f.NextOnlyP99ms, f.NextOnlyMaxms, f.EffectiveP50ms, f.EffectiveP99ms, f.EffectiveMaxms)
		fmt.Fprintf(w, "\nSignal lag: the tick's refill signal's event time minus the tick. Effective lag: when the tick became applicable, each refill authorizing the ticks within %v after its own (and always the next) — max(0, the earliest such signal's arrival − the tick), at most its own signal lag; v0.3.0's column counts the previous tick's signal alone, from the same history. Goal: effective p99 ≤ %v — %s.\n\n", bucket.AuthorizeLead,
			refillGoalP99, verdict(f.EffectiveP99ms <= ms(refillGoalP99), fmt.Sprintf("p99 %.0f ms", f.EffectiveP99ms)))
	}
	if len(r.Many) > 0 {
		m0 := r.Many[0]
		fmt.Fprintf(w, "## Many buckets: %d buckets refilled %s, all ticking in the same second; the second tick after the sync\n\n", m0.Buckets, m0.Schedule)
		fmt.Fprintf(w, "| server | first sync | idempotent rerun | worker heap (idle → all buckets) | schedule start lag p50 / p99 | tick reached (in %.0f s) | signal lag (before): within %.0f s, p50 / p99 / max | **effective lag (now)**: within %.0f s, p50 / p99 / max | CPU s server / worker | server CPU per refill |\n|---|---|---|---|---|---|---|---|---|---|\n",
			m0.SettleSec, m0.OnTimeWithinMs/1000, m0.OnTimeWithinMs/1000)
		worst, known := 0.0, true
		for _, m := range r.Many {
			worst = max(worst, m.EffectiveMaxms)
			known = known && m.EffectiveKnown == m.Buckets
			fmt.Fprintf(w, "| %s | %.1f s | %.1f s | %.1f MB → %.1f MB | %.1f / %.1f s | %d of %d | %.1f%%, %.1f / %.1f / %.1f s | **%.1f%%, %.1f / %.1f / %.1f s** | %.1f / %.1f | %.0f ms (%d refills) |\n",
				m.Server, m.SyncFirstSec, m.SyncAgainSec, m.WorkerIdleHeapMB, m.WorkerHeapMB, m.StartLagP50ms/1000, m.StartLagP99ms/1000,
				m.Landed, m.Buckets, 100*m.OnTime, m.RefillLagP50ms/1000, m.RefillLagP99ms/1000, m.RefillLagMaxms/1000,
				100*m.EffectiveOnTime, m.EffectiveP50ms/1000, m.EffectiveP99ms/1000, m.EffectiveMaxms/1000,
				m.ServerCPUSec, m.WorkerCPUSec, m.ServerCPUPerRefillMs, m.Refills)
		}
		fmt.Fprintln(w, "\nLags are read from each bucket's history. Signal lag: the tick's own refill signal, which the bucket waited for before; effective lag: when the tick became applicable now, once a refill that authorizes it (the previous tick's, or one within bucket.AuthorizeLead before it) had arrived. CPU is from the tick to the check; per refill, over the refill signals that reached a bucket meanwhile. Schedules start at most worker.schedulerNamespaceStartWorkflowRPS workflows a second per namespace (Temporal's default: 30); tb dev raises it to 2000.")
		detail := fmt.Sprintf("last %.1f s late", worst/1000)
		if !known {
			detail = "not every bucket's tick was seen in time"
		}
		fmt.Fprintf(w, "\nGoal: the last refill ≤ %v late (effective lag, every bucket) — %s.\n\n", onTimeWithin, verdict(known && worst <= ms(onTimeWithin), detail))
	}
	if r.Stacked != nil {
		printStacked(w, r.Stacked)
	}
	if r.Keyed != nil {
		printKeyed(w, r.Keyed)
	}
}

func printStacked(w io.Writer, s *StackedResult) {
	if len(s.Throughput) > 0 {
		fmt.Fprintf(w, "## Stacked limits: each call acquires from two buckets in turn, against one bucket; callers on the acquirer directly\n\n")
		fmt.Fprintf(w, "| processes | callers | one bucket: grants/s (mean) | p50 / p99 | two buckets: grants/s (mean) | p50 / p99 | **two ÷ one** | ResourceExhausted (one / two) | errors (one / two) | denials (one / two) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, t := range s.Throughput {
			ratio := fmt.Sprintf("**%.2f×**", t.TwoVsOne)
			if t.One.MeanGrantsPerSec == 0 {
				ratio = "**–** (one bucket granted nothing)"
			}
			fmt.Fprintf(w, "| %d | %d | %.0f (%.0f) | %s / %s | %.0f (%.0f) | %s / %s | %s | %d / %d | %d / %d | %d / %d |\n",
				t.Processes, t.Callers, t.One.GrantsPerSec, t.One.MeanGrantsPerSec, latency(t.One.P50ms), latency(t.One.P99ms),
				t.Two.GrantsPerSec, t.Two.MeanGrantsPerSec, latency(t.Two.P50ms), latency(t.Two.P99ms), ratio,
				t.One.ResourceExhausted, t.Two.ResourceExhausted, t.One.Errors, t.Two.Errors, t.One.Denied, t.Two.Denied)
		}
		fmt.Fprintln(w, "\nEach cell runs on a fresh server with both buckets (plenty of tokens, never refilled). A call on two buckets is granted when both granted it, and its latency is both acquires'. Grants per second: the median of one-second windows, and in brackets the mean over the run, which the ratio uses.")
		fmt.Fprintln(w)
	}
	if len(s.Overhead) > 0 {
		fmt.Fprintf(w, "### Stacked guards: one no-op activity guarded by two buckets, against one, and the interceptor off\n\n")
		fmt.Fprintf(w, "| concurrent workflows | pause between | workflows × reps | off p50 / p99 | one guard p50 / p99 | two guards p50 / p99 | **two ÷ one** p50 / p99 | one ÷ off p50 / p99 | two ÷ off p50 / p99 | results late by the 20 s long poll (off / one / two) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, o := range s.Overhead {
			fmt.Fprintf(w, "| %d | %.0f ms | %d × %d | %.1f / %.1f ms | %.1f / %.1f ms | %.1f / %.1f ms | **%.2f×** / %.2f× | %.2f× / %.2f× | %.2f× / %.2f× | %d / %d / %d |\n",
				o.Concurrency, o.PauseMs, o.Workflows, o.Reps, o.OffP50ms, o.OffP99ms, o.OneP50ms, o.OneP99ms, o.TwoP50ms, o.TwoP99ms,
				o.TwoVsOneP50, o.TwoVsOneP99, o.OneVsOffP50, o.OneVsOffP99, o.TwoVsOffP50, o.TwoVsOffP99, o.SlowOff, o.SlowOne, o.SlowTwo)
		}
		fmt.Fprintln(w, "\nAs the overhead table: latency from the client's start call to the close the server recorded; ratios are medians of per-repetition ratios; the modes rotate order between repetitions; tb's default options (no lease). The interceptor acquires the two guards in turn.")
		fmt.Fprintln(w)
	}
}

func printKeyed(w io.Writer, k *KeyedResult) {
	fmt.Fprintf(w, "## Keyed bucket: %d callers over %d processes, each call naming one of %d keys at random, against one unkeyed bucket\n\n", k.Callers, k.Processes, k.Keys)
	fmt.Fprintf(w, "| bucket | shards | grants/s (mean) | p50 / p99 | **÷ unkeyed** | ResourceExhausted | errors | denials | keys granted | keys each shard holds |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	rows := []struct {
		name      string
		shards    int
		row       LoadRow
		vs        float64
		keys      int
		touched   int
		shardKeys []int
	}{
		{"unkeyed", 0, k.Unkeyed, 0, 0, 0, nil},
		{fmt.Sprintf("keyed, %d keys", k.Keys), k.Shards, k.Keyed, k.KeyedVsUnkeyed, k.Keys, k.KeysTouched, k.ShardKeys},
		{fmt.Sprintf("keyed, %d keys", k.FewKeys), k.Shards, k.Few, k.FewVsUnkeyed, k.FewKeys, k.FewKeysTouched, k.FewShardKeys},
	}
	for _, r := range rows {
		shards, vs, keys, held := "–", "–", "–", "–"
		if r.keys > 0 {
			shards, keys, held = fmt.Sprint(r.shards), fmt.Sprintf("%d of %d", r.touched, r.keys), joinInts(r.shardKeys)
			vs = fmt.Sprintf("**%.2f×**", r.vs)
			if k.Unkeyed.MeanGrantsPerSec == 0 {
				vs = "**–** (unkeyed granted nothing)"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %.0f (%.0f) | %s / %s | %s | %d | %d | %d | %s | %s |\n",
			r.name, shards, r.row.GrantsPerSec, r.row.MeanGrantsPerSec, latency(r.row.P50ms), latency(r.row.P99ms), vs,
			r.row.ResourceExhausted, r.row.Errors, r.row.Denied, keys, held)
	}
	fmt.Fprintf(w, "\nEach bucket runs %.0f s on a fresh server with the tb worker in a process of its own, the bucket created by operator.Apply with plenty of tokens (per key, when keyed) and never refilled during the load. Keys are drawn uniformly, from a fixed sequence per caller. Keys granted counts those granted at least once, warm-up included; a shard's keys are its state query's after the load. Grants per second: the median of one-second windows, and in brackets the mean over the run, which the ratio uses.\n\n", k.Seconds)
	fmt.Fprintf(w, "Goal: the keyed bucket of %d keys on %d shards ≥ 50%% of the unkeyed bucket's grants/s — %s.\n\n",
		k.Keys, k.Shards, verdict(k.Unkeyed.MeanGrantsPerSec > 0 && k.KeyedVsUnkeyed >= 0.5, fmt.Sprintf("%.2f×", k.KeyedVsUnkeyed)))
	if len(k.Cost) == 0 {
		return
	}
	c0 := k.Cost[0]
	fmt.Fprintf(w, "### After each load, with no callers: refill ticks, continue-as-new, the worker's heap\n\n")
	fmt.Fprintf(w, "| bucket | workflows | keys held | worker heap (idle → after the load) | **history events per workflow per tick** | **server CPU per tick**, idle subtracted (all) | worker CPU per tick | runs begun by continue-as-new (forced) | **largest continue-as-new input** | keys / granted IDs it carried |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range k.Cost {
		fmt.Fprintf(w, "| %s | %d | %d | %.1f → %.1f MB | **%.2f** | **%.2f ms** (%.2f ms) | %.2f ms | %d (%d) | **%s** | %d / %d |\n",
			c.Bucket, c.Workflows, c.KeysHeld, c.WorkerIdleHeapMB, c.WorkerHeapMB, c.EventsPerTick,
			c.ServerCPUPerTickNet, c.ServerCPUPerTickMs, c.WorkerCPUPerTickMs,
			c.ContinuedRuns, c.Forced, bytesSize(c.LargestInputBytes), c.LargestInputKeys, c.LargestInputGrantedIDs)
	}
	idle := make([]string, len(k.Cost))
	types := make([]string, len(k.Cost))
	for i, c := range k.Cost {
		idle[i] = fmt.Sprintf("%.1f", c.IdleServerCPUMsPerS)
		var ts []string
		for _, t := range slices.Sorted(maps.Keys(c.EventTypes)) {
			ts = append(ts, fmt.Sprintf("%s %.0f", t, float64(c.EventTypes[t])/float64(max(c.Workflows, 1))))
		}
		types[i] = fmt.Sprintf("%s: %s", c.Bucket, strings.Join(ts, ", "))
	}
	fmt.Fprintf(w, "\nAfter the load each workflow of the bucket (every shard, when keyed) is made to continue as new by acquire updates of one token up to its %d updates a run, so a run begins with the whole state the load left; the largest input is the biggest a run began with by continue-as-new, in bytes of its JSON, the load's runs included. Then, after %.0f s with nothing sent (the server idled at %s ms CPU a second, in the order of the rows), %d refill ticks one a second, each signalled to every workflow of the bucket as the refill workflow does (not through the Schedule, whose cost does not depend on keys). Per tick: the history events the workflows' histories gained from the first tick to %.0f s after the last, per workflow; CPU over the same window for all the bucket's workflows, the server's (this process: the embedded server and the idle clients), idle subtracted and in brackets all of it, and the worker process's, all of it (read in clock ticks of 10 ms, too coarse to subtract the little it uses idle). The heap is the worker's live Go heap after a collection, once the load ended.\n\nEvents of the ticks' window by type, per workflow — %s.\n\n",
		workflows.DefaultMaxUpdatesPerRun, c0.IdleSeconds, strings.Join(idle, " / "), c0.Ticks, keyedSettle.Seconds(), strings.Join(types, "; "))
	fmt.Fprintf(w, "Goal: refill cost per tick independent of the number of keys — %d keys ÷ %d keys, per tick: history events **%.2f×**, server CPU **%.2f×**, worker CPU **%.2f×**.\n\n",
		k.Keys, k.FewKeys, k.TickEventsVsFew, k.TickServerCPUVsFew, k.TickWorkerCPUVsFew)
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, " / ")
}

// bytesSize writes n bytes in kB (1,000 bytes) with the exact count.
func bytesSize(n int) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f kB (%d bytes)", float64(n)/1000, n)
}

// verdict says whether a goal was met, and if not, by what.
func verdict(met bool, detail string) string {
	if met {
		return "**met**"
	}
	return "**not met**: " + detail
}

func latency(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f ms", v)
}

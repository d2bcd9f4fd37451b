package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"golang.org/x/sync/errgroup"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// KeyedResult compares a keyed bucket ("100 a minute per customer"), each
// call naming a customer at random, with the same callers on one unkeyed
// bucket; callers on the acquirer directly, plenty of tokens per key. The
// same load runs again on a keyed bucket of FewKeys keys, and after each
// load, with no callers, Cost measures what the bucket's workflows cost.
type KeyedResult struct {
	Processes int `json:"processes"`
	Callers   int `json:"callers"`
	Keys      int `json:"keys"`
	// FewKeys are the keys the second keyed bucket's calls name.
	FewKeys int     `json:"fewKeys"`
	Shards  int     `json:"shards"`
	Seconds float64 `json:"seconds"`
	Unkeyed LoadRow `json:"unkeyed"`
	Keyed   LoadRow `json:"keyed"`
	Few     LoadRow `json:"few"`
	// KeyedVsUnkeyed is Keyed's MeanGrantsPerSec over Unkeyed's, and
	// FewVsUnkeyed Few's; 0 when Unkeyed granted nothing.
	KeyedVsUnkeyed float64 `json:"keyedVsUnkeyed,omitempty"`
	FewVsUnkeyed   float64 `json:"fewVsUnkeyed,omitempty"`
	// KeysTouched counts the keys granted at least once, warm-up included,
	// and ShardKeys the keys each shard holds after the load, by its state
	// query; the Few ones are the same for the bucket of FewKeys.
	KeysTouched    int   `json:"keysTouched"`
	ShardKeys      []int `json:"shardKeys"`
	FewKeysTouched int   `json:"fewKeysTouched"`
	FewShardKeys   []int `json:"fewShardKeys"`
	// Cost holds, for the unkeyed bucket, the keyed one and the one of
	// FewKeys in that order, what it cost after its load.
	Cost []KeyedCost `json:"cost"`
	// The keyed bucket's refill cost per tick over that of the bucket of
	// FewKeys: history events, server CPU (idle subtracted) and worker CPU.
	TickEventsVsFew    float64 `json:"tickEventsVsFew,omitempty"`
	TickServerCPUVsFew float64 `json:"tickServerCpuVsFew,omitempty"`
	TickWorkerCPUVsFew float64 `json:"tickWorkerCpuVsFew,omitempty"`
}

// KeyedCost is what one bucket's workflows (its shards, or the one of an
// unkeyed bucket) cost once its load ended, with no callers: the tb
// worker's heap, each refill tick, and continue-as-new.
type KeyedCost struct {
	Bucket    string `json:"bucket"`
	Workflows int    `json:"workflows"`
	// KeysHeld is the keys the shards hold after the load, by their state queries.
	KeysHeld int `json:"keysHeld"`
	// The tb worker's live heap before the bucket existed, and after its load.
	WorkerIdleHeapMB float64 `json:"workerIdleHeapMB"`
	WorkerHeapMB     float64 `json:"workerHeapMB"`
	// Forced counts the workflows made to continue as new after the load
	// (sent acquire updates up to DefaultMaxUpdatesPerRun), so that a run
	// starts with the whole state the load left; ContinuedRuns counts the
	// runs begun by continue-as-new, the load's and the forced ones.
	Forced        int `json:"forced"`
	ContinuedRuns int `json:"continuedRuns"`
	// The largest input a run began with by continue-as-new, in bytes of
	// its payloads' data, and the keys and granted request IDs it carried.
	LargestInputBytes      int `json:"largestInputBytes"`
	LargestInputKeys       int `json:"largestInputKeys"`
	LargestInputGrantedIDs int `json:"largestInputGrantedIds"`
	// Ticks refill signals, one a second, each sent to every workflow of the
	// bucket as the refill workflow sends them; IdleSeconds before them with
	// nothing sent measured the server's idle CPU.
	Ticks               int     `json:"ticks"`
	TickSeconds         float64 `json:"tickSeconds"`
	IdleSeconds         float64 `json:"idleSeconds"`
	IdleServerCPUMsPerS float64 `json:"idleServerCpuMsPerSec"`
	IdleWorkerCPUMsPerS float64 `json:"idleWorkerCpuMsPerSec"`
	EventsPerTick       float64 `json:"eventsPerWorkflowPerTick"` // history events, per workflow
	ServerCPUPerTickMs  float64 `json:"serverCpuPerTickMs"`       // the ticks' window over the ticks
	ServerCPUPerTickNet float64 `json:"serverCpuPerTickNetMs"`    // the same, idle subtracted
	// WorkerCPUPerTickMs is the worker's CPU in the ticks' window over the
	// ticks, idle not subtracted: it is read in clock ticks of 10 ms, too
	// coarse for the few it uses idle.
	WorkerCPUPerTickMs float64 `json:"workerCpuPerTickMs"`
	EventsInTickWindow int     `json:"eventsInTickWindow"`
	EventsPerWorkflow  []int   `json:"tickWindowEventsPerWorkflow"` // in the ticks' window, each workflow
	// EventTypes counts the events of the ticks' window by type, over the workflows.
	EventTypes map[string]int `json:"tickWindowEventTypes"`
}

const (
	keyedKeys    = 10_000
	keyedFewKeys = 100
	keyedCallers = 512
	keyedProcs   = 4
	// keyedShards holds 10,000 keys: a shard holds at most
	// workflows.MaxKeysPerShard (4,096) keys not back at their starting
	// level, and these, never refilled, never are; 4 shards × 4,096 keys
	// hold 10,000.
	keyedShards = 4
	keyedSeed   = 1
	keyedBucket = "per_customer"
	// keyedTicks refill ticks are sent after each load, one a second, after
	// keyedIdle with nothing sent; keyedQuiet lets a load's last workflow
	// tasks finish first, and keyedSettle the last tick's.
	keyedTicks  = 20
	keyedIdle   = 5 * time.Second
	keyedQuiet  = 2 * time.Second
	keyedSettle = 2 * time.Second
)

func runKeyed(ctx context.Context, cfg config) (*KeyedResult, error) {
	dur := time.Duration(cfg.scale(3, 10)) * time.Second
	res := &KeyedResult{Processes: keyedProcs, Callers: keyedCallers, Keys: keyedKeys, FewKeys: keyedFewKeys, Shards: keyedShards, Seconds: dur.Seconds()}
	var cells [3]*keyedOutcome
	for i, keys := range []int{0, keyedKeys, keyedFewKeys} {
		var err error
		if cells[i], err = keyedCell(ctx, cfg, keys, dur); err != nil {
			return nil, err
		}
		res.Cost = append(res.Cost, cells[i].cost)
	}
	res.Unkeyed = cells[0].row
	res.Keyed, res.KeysTouched, res.ShardKeys = cells[1].row, cells[1].touched, cells[1].shardKeys
	res.Few, res.FewKeysTouched, res.FewShardKeys = cells[2].row, cells[2].touched, cells[2].shardKeys
	if res.Unkeyed.MeanGrantsPerSec > 0 {
		res.KeyedVsUnkeyed = res.Keyed.MeanGrantsPerSec / res.Unkeyed.MeanGrantsPerSec
		res.FewVsUnkeyed = res.Few.MeanGrantsPerSec / res.Unkeyed.MeanGrantsPerSec
	}
	many, few := cells[1].cost, cells[2].cost
	res.TickEventsVsFew = ratio(many.EventsPerTick, few.EventsPerTick)
	res.TickServerCPUVsFew = ratio(many.ServerCPUPerTickNet, few.ServerCPUPerTickNet)
	res.TickWorkerCPUVsFew = ratio(many.WorkerCPUPerTickMs, few.WorkerCPUPerTickMs)
	cfg.logf("keyed: P=%d C=%d: unkeyed %.0f grants/s, p99 %.1fms; %d keys %.0f grants/s, p99 %.1fms (%.2fx); %d keys %.0f grants/s, p99 %.1fms (%.2fx); per tick %d keys ÷ %d keys: events %.2fx, server CPU %.2fx, worker CPU %.2fx",
		keyedProcs, keyedCallers, res.Unkeyed.MeanGrantsPerSec, res.Unkeyed.P99ms,
		keyedKeys, res.Keyed.MeanGrantsPerSec, res.Keyed.P99ms, res.KeyedVsUnkeyed,
		keyedFewKeys, res.Few.MeanGrantsPerSec, res.Few.P99ms, res.FewVsUnkeyed,
		keyedKeys, keyedFewKeys, res.TickEventsVsFew, res.TickServerCPUVsFew, res.TickWorkerCPUVsFew)
	return res, nil
}

// ratio is a over b, 0 when b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// keyedOutcome is what keyedCell measured of one bucket.
type keyedOutcome struct {
	row       LoadRow
	touched   int   // keys granted at least once
	shardKeys []int // keys each shard holds after the load
	cost      KeyedCost
}

// keyedCell measures the callers on a bucket created by operator.Apply on a
// server of its own, with the tb worker in a process of its own, and then
// what the bucket costs with no callers (see KeyedCost). On a keyed bucket
// (keys > 0) each call names a key drawn uniformly from keys, from a
// sequence per caller fixed by keyedSeed; keys 0 is an unkeyed bucket.
func keyedCell(ctx context.Context, cfg config, keys int, dur time.Duration) (*keyedOutcome, error) {
	e, err := newEnv(ctx, false, nil)
	if err != nil {
		return nil, err
	}
	defer e.close()
	worker, err := startWorkerProcess(e)
	if err != nil {
		return nil, err
	}
	defer worker.stop()
	spec := bucket.Spec{Name: keyedBucket, Schedule: "@yearly", Amount: bucket.MaxTokens, Maximum: bucket.MaxTokens}
	out := &keyedOutcome{cost: KeyedCost{Bucket: "unkeyed", Workflows: 1}}
	ids := []string{workflows.BucketID(spec.Name)}
	if keys > 0 {
		spec.Keyed, spec.Shards = true, keyedShards
		out.cost.Bucket, out.cost.Workflows = fmt.Sprintf("keyed, %d keys", keys), keyedShards
		ids = make([]string, keyedShards)
		for i := range ids {
			ids[i] = workflows.ShardID(spec.Name, i)
		}
	}
	if out.cost.WorkerIdleHeapMB, err = worker.heapMB(); err != nil {
		return nil, err
	}
	if err := e.sync(ctx, spec); err != nil {
		return nil, err
	}
	clients := make([]client.Client, keyedProcs)
	for i := range clients {
		if clients[i], err = e.newClient(); err != nil {
			return nil, err
		}
	}
	lims, err := acquirers(clients)
	if err != nil {
		return nil, err
	}
	rngs := make([]*rand.Rand, keyedCallers)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewPCG(keyedSeed, uint64(i)))
	}
	touched := make([]atomic.Bool, keys)
	out.row = loadCell(ctx, e, lims, keyedCallers, "k", dur, func(ctx context.Context, lim interceptor.Limiter, caller int, id string) (bool, error) {
		if keys == 0 {
			d, err := lim.Acquire(ctx, spec.Name, id, 1)
			return d.Granted, err
		}
		k := rngs[caller].IntN(keys)
		d, err := lim.(interceptor.KeyedLimiter).AcquireKey(ctx, interceptor.Key{Bucket: spec.Name, Key: keyName(k), Shards: keyedShards}, id, 1)
		if err == nil && d.Granted {
			touched[k].Store(true)
		}
		return d.Granted, err
	})
	for i := range touched {
		if touched[i].Load() {
			out.touched++
		}
	}

	if err := sleep(ctx, keyedQuiet); err != nil {
		return nil, err
	}
	if out.cost.WorkerHeapMB, err = worker.heapMB(); err != nil {
		return nil, err
	}
	if keys > 0 {
		out.shardKeys = make([]int, len(ids))
		for i, id := range ids {
			st, err := shardState(ctx, e.c, id)
			if err != nil {
				return nil, fmt.Errorf("shard %d: %w", i, err)
			}
			out.shardKeys[i] = st.Keys
			out.cost.KeysHeld += st.Keys
		}
	}
	if out.cost.Forced, err = continueAsNew(ctx, e.c, spec, ids, keys); err != nil {
		return nil, err
	}
	from, to, err := refillTicks(ctx, worker, e.c, ids, &out.cost)
	if err != nil {
		return nil, err
	}
	if err := readRuns(ctx, e.c, ids, from, to, &out.cost); err != nil {
		return nil, err
	}
	c := out.cost
	cfg.logf("keyed: %s: %.0f grants/s, p99 %.1fms; %d keys held %v; worker heap %.1f → %.1f MB; %d continued runs (%d forced), largest input %d bytes with %d keys and %d granted IDs; per tick and workflow %.2f events, server CPU %.2f ms (%.2f idle subtracted; idle %.1f ms/s), worker CPU %.2f ms",
		c.Bucket, out.row.MeanGrantsPerSec, out.row.P99ms, c.KeysHeld, out.shardKeys, c.WorkerIdleHeapMB, c.WorkerHeapMB,
		c.ContinuedRuns, c.Forced, c.LargestInputBytes, c.LargestInputKeys, c.LargestInputGrantedIDs,
		c.EventsPerTick, c.ServerCPUPerTickMs, c.ServerCPUPerTickNet, c.IdleServerCPUMsPerS, c.WorkerCPUPerTickMs)
	return out, nil
}

// keyName is the name of key k of the keyed buckets.
func keyName(k int) string { return fmt.Sprintf("customer%05d", k) }

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// continueAsNew makes each of the bucket's workflows ids continue as new,
// carrying the state the load left, by sending it acquire updates of one
// token (for a keyed bucket, of the first of its keys, drawn from keys, the
// shard holds) until it has accepted DefaultMaxUpdatesPerRun in its run. It
// returns how many it made continue as new.
func continueAsNew(ctx context.Context, c client.Client, spec bucket.Spec, ids []string, keys int) (int, error) {
	g, ctx := errgroup.WithContext(ctx)
	var forced atomic.Int32
	for shard, id := range ids {
		key := ""
		for k := range keys {
			if bucket.KeyShard(keyName(k), len(ids)) == shard {
				key = keyName(k)
				break
			}
		}
		g.Go(func() error {
			st, err := shardState(ctx, c, id)
			if err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
			run := st.Run
			// Eight at a time: Temporal holds at most 10 updates in flight per workflow.
			sem := make(chan struct{}, 8)
			var wg sync.WaitGroup
			var failed atomic.Pointer[error]
			for n := range max(workflows.DefaultMaxUpdatesPerRun-st.Updates, 0) {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer func() { <-sem; wg.Done() }()
					batch := workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: fmt.Sprintf("can-%d-%d", shard, n), Cost: 1, Key: key}}}
					h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
						WorkflowID: id, UpdateName: workflows.AcquireUpdate, Args: []any{batch}, WaitForStage: client.WorkflowUpdateStageCompleted,
					})
					if err == nil {
						var resp workflows.AcquireResponse
						err = h.Get(ctx, &resp)
					}
					if err != nil {
						failed.Store(&err)
					}
				}()
			}
			wg.Wait()
			if err := failed.Load(); err != nil {
				return fmt.Errorf("%s: acquire: %w", id, *err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				st, err := shardState(ctx, c, id)
				if err == nil && st.Run > run {
					forced.Add(1)
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s: still in run %d after %d updates (%v)", id, run, workflows.DefaultMaxUpdatesPerRun, err)
				}
				if err := sleep(ctx, 100*time.Millisecond); err != nil {
					return err
				}
			}
		})
	}
	err := g.Wait()
	return int(forced.Load()), err
}

// refillTicks sends keyedTicks refill signals to every workflow of a bucket,
// one tick a second, each with its tick's nominal time and the ID the refill
// workflow gives it (it signals each shard of a keyed bucket so), after
// keyedIdle with nothing sent; it records the server's (this process's) and
// the worker's CPU per tick in cost, and returns the ticks' window, which
// ends keyedSettle after the last tick.
func refillTicks(ctx context.Context, worker *workerProcess, c client.Client, ids []string, cost *KeyedCost) (from, to time.Time, err error) {
	idleFrom, server0, worker0 := time.Now(), selfCPU(), worker.cpu()
	if err := sleep(ctx, keyedIdle); err != nil {
		return from, to, err
	}
	idle := time.Since(idleFrom)
	idleServer, idleWorker := selfCPU()-server0, worker.cpu()-worker0
	cost.IdleSeconds = idle.Seconds()
	cost.IdleServerCPUMsPerS = ms(idleServer) / idle.Seconds()
	cost.IdleWorkerCPUMsPerS = ms(idleWorker) / idle.Seconds()

	from, server0, worker0 = time.Now(), selfCPU(), worker.cpu()
	for range keyedTicks {
		next := time.Now().Truncate(time.Second).Add(time.Second)
		if err := sleep(ctx, time.Until(next)); err != nil {
			return from, to, err
		}
		r := workflows.Refill{ID: next.UTC().Format(time.RFC3339), Tick: next.UTC()}
		for _, id := range ids {
			if err := c.SignalWorkflow(ctx, id, "", workflows.RefillSignal, r); err != nil {
				return from, to, fmt.Errorf("%s: refill: %w", id, err)
			}
		}
	}
	if err := sleep(ctx, keyedSettle); err != nil {
		return from, to, err
	}
	to = time.Now()
	window := to.Sub(from)
	serverCPU, workerCPU := selfCPU()-server0, worker.cpu()-worker0
	cost.Ticks, cost.TickSeconds = keyedTicks, window.Seconds()
	cost.ServerCPUPerTickMs = ms(serverCPU) / keyedTicks
	cost.WorkerCPUPerTickMs = ms(workerCPU) / keyedTicks
	cost.ServerCPUPerTickNet = (ms(serverCPU) - cost.IdleServerCPUMsPerS*window.Seconds()) / keyedTicks
	return from, to, nil
}

// readRuns reads every run of the workflows ids: it counts each one's
// history events from from to to, and finds the largest input a run began
// with by continue-as-new.
func readRuns(ctx context.Context, c client.Client, ids []string, from, to time.Time, cost *KeyedCost) error {
	cost.EventsPerWorkflow, cost.EventTypes = make([]int, len(ids)), map[string]int{}
	for i, id := range ids {
		for runID := ""; ; {
			it := c.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			previous := ""
			for it.HasNext() {
				ev, err := it.Next()
				if err != nil {
					return fmt.Errorf("%s: history: %w", id, err)
				}
				if at := ev.GetEventTime().AsTime(); !at.Before(from) && !at.After(to) {
					cost.EventsPerWorkflow[i]++
					cost.EventTypes[ev.GetEventType().String()]++
				}
				a := ev.GetWorkflowExecutionStartedEventAttributes()
				if a == nil || a.GetContinuedExecutionRunId() == "" {
					continue
				}
				previous = a.GetContinuedExecutionRunId()
				cost.ContinuedRuns++
				size := 0
				for _, p := range a.GetInput().GetPayloads() {
					size += len(p.GetData())
				}
				if size <= cost.LargestInputBytes {
					continue
				}
				cost.LargestInputBytes = size
				var in struct {
					Keys    map[string]json.RawMessage `json:"keys"`
					Granted struct {
						IDs []string `json:"ids"`
					} `json:"granted"`
				}
				if ps := a.GetInput().GetPayloads(); len(ps) == 1 && json.Unmarshal(ps[0].GetData(), &in) == nil {
					cost.LargestInputKeys, cost.LargestInputGrantedIDs = len(in.Keys), len(in.Granted.IDs)
				}
			}
			if previous == "" {
				break
			}
			runID = previous
		}
		cost.EventsInTickWindow += cost.EventsPerWorkflow[i]
	}
	if cost.Ticks > 0 {
		cost.EventsPerTick = float64(cost.EventsInTickWindow) / float64(cost.Ticks*len(ids))
	}
	return nil
}

// shardState asks one shard of a keyed bucket (or an unkeyed bucket's
// workflow) for its state (operator.State sums the shards').
func shardState(ctx context.Context, c client.Client, id string) (workflows.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := c.QueryWorkflow(ctx, id, "", workflows.StateQuery)
	if err != nil {
		return workflows.Status{}, err
	}
	var st workflows.Status
	err = v.Get(&st)
	return st, err
}

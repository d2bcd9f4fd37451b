package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// KeyedResult compares a keyed bucket ("100 a minute per customer"), each
// call naming a customer at random, with the same callers on one unkeyed
// bucket; callers on the acquirer directly, plenty of tokens per key.
type KeyedResult struct {
	Processes int     `json:"processes"`
	Callers   int     `json:"callers"`
	Keys      int     `json:"keys"`
	Shards    int     `json:"shards"`
	Seconds   float64 `json:"seconds"`
	Unkeyed   LoadRow `json:"unkeyed"`
	Keyed     LoadRow `json:"keyed"`
	// KeyedVsUnkeyed is Keyed's MeanGrantsPerSec over Unkeyed's; 0 when Unkeyed granted nothing.
	KeyedVsUnkeyed float64 `json:"keyedVsUnkeyed,omitempty"`
	// KeysTouched counts the keys granted at least once, warm-up included,
	// and ShardKeys the keys each shard holds at the end, by its state query.
	KeysTouched int   `json:"keysTouched"`
	ShardKeys   []int `json:"shardKeys"`
}

const (
	keyedKeys    = 10_000
	keyedCallers = 512
	keyedProcs   = 4
	// keyedShards holds 10,000 keys: a shard holds at most
	// workflows.MaxKeysPerShard (4,096) keys not back at their starting
	// level, and these, never refilled, never are; 4 shards × 4,096 keys
	// hold 10,000.
	keyedShards = 4
	keyedSeed   = 1
)

func runKeyed(ctx context.Context, cfg config) (*KeyedResult, error) {
	dur := time.Duration(cfg.scale(3, 10)) * time.Second
	res := &KeyedResult{Processes: keyedProcs, Callers: keyedCallers, Keys: keyedKeys, Shards: keyedShards, Seconds: dur.Seconds()}
	var err error
	if res.Unkeyed, _, _, err = keyedCell(ctx, false, dur); err != nil {
		return nil, err
	}
	if res.Keyed, res.KeysTouched, res.ShardKeys, err = keyedCell(ctx, true, dur); err != nil {
		return nil, err
	}
	if res.Unkeyed.MeanGrantsPerSec > 0 {
		res.KeyedVsUnkeyed = res.Keyed.MeanGrantsPerSec / res.Unkeyed.MeanGrantsPerSec
	}
	cfg.logf("keyed: P=%d C=%d: unkeyed %.0f grants/s, p99 %.1fms; keyed %.0f grants/s, p99 %.1fms (%.2fx); %d keys touched, shards hold %v",
		keyedProcs, keyedCallers, res.Unkeyed.MeanGrantsPerSec, res.Unkeyed.P99ms, res.Keyed.MeanGrantsPerSec, res.Keyed.P99ms,
		res.KeyedVsUnkeyed, res.KeysTouched, res.ShardKeys)
	return res, nil
}

// keyedCell measures the callers on a bucket, keyed or not, created by
// operator.Apply on a server of its own. On the keyed bucket each call names
// a key drawn uniformly from keyedKeys, from a sequence per caller fixed by
// keyedSeed; it returns how many keys were granted, and each shard's keys.
func keyedCell(ctx context.Context, keyed bool, dur time.Duration) (LoadRow, int, []int, error) {
	e, err := newEnv(ctx, true, nil)
	if err != nil {
		return LoadRow{}, 0, nil, err
	}
	defer e.close()
	spec := bucket.Spec{Name: "per_customer", Schedule: "@yearly", Amount: bucket.MaxTokens, Maximum: bucket.MaxTokens}
	if keyed {
		spec.Keyed, spec.Shards = true, keyedShards
	}
	if err := e.sync(ctx, spec); err != nil {
		return LoadRow{}, 0, nil, err
	}
	clients := make([]client.Client, keyedProcs)
	for i := range clients {
		if clients[i], err = e.newClient(); err != nil {
			return LoadRow{}, 0, nil, err
		}
	}
	lims, err := acquirers(clients)
	if err != nil {
		return LoadRow{}, 0, nil, err
	}
	rngs := make([]*rand.Rand, keyedCallers)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewPCG(keyedSeed, uint64(i)))
	}
	touched := make([]atomic.Bool, keyedKeys)
	row := loadCell(ctx, e, lims, keyedCallers, "k", dur, func(ctx context.Context, lim interceptor.Limiter, caller int, id string) (bool, error) {
		if !keyed {
			d, err := lim.Acquire(ctx, spec.Name, id, 1)
			return d.Granted, err
		}
		k := rngs[caller].IntN(keyedKeys)
		d, err := lim.(interceptor.KeyedLimiter).AcquireKey(ctx, interceptor.Key{Bucket: spec.Name, Key: fmt.Sprintf("customer%05d", k), Shards: keyedShards}, id, 1)
		if err == nil && d.Granted {
			touched[k].Store(true)
		}
		return d.Granted, err
	})
	if !keyed {
		return row, 0, nil, nil
	}
	n := 0
	for i := range touched {
		if touched[i].Load() {
			n++
		}
	}
	shardKeys := make([]int, keyedShards)
	for i := range shardKeys {
		st, err := shardState(ctx, e.c, workflows.ShardID(spec.Name, i))
		if err != nil {
			return LoadRow{}, 0, nil, fmt.Errorf("shard %d: %w", i, err)
		}
		shardKeys[i] = st.Keys
	}
	return row, n, shardKeys, nil
}

// shardState asks one shard of a keyed bucket for its state (operator.State
// sums the shards').
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

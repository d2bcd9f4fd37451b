package workflows

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/tokenbucket/tb/bucket"
)

// MaxKeysPerShard bounds the keys one shard of a keyed bucket holds. A key
// back at its starting level is forgotten when the shard continues as new,
// or sooner when the shard is full; a key the shard does not hold starts at
// that level. With every key, request, tick and settle-up ID of the longest
// kind, a full shard carries 907,223 bytes across continue-as-new, under 1 MB.
const MaxKeysPerShard = 4096

// emptiestKeys is how many of the emptiest keys the state query reports.
const emptiestKeys = 5

func (w *bucketWorkflow) keyed() bool { return w.b.Spec().Keyed }

// checkKey returns why request r cannot be asked of this bucket, or "".
func (w *bucketWorkflow) checkKey(r AcquireRequest) string {
	if !w.keyed() {
		if r.Key != "" {
			return fmt.Sprintf("bucket %q is not keyed; the request names key %q", w.b.Spec().Name, r.Key)
		}
		return ""
	}
	if err := bucket.CheckKey(r.Key); err != nil {
		return fmt.Sprintf("bucket %q is keyed: %v", w.b.Spec().Name, err)
	}
	if n := w.b.Spec().ShardCount(); bucket.KeyShard(r.Key, n) != w.in.Shard {
		return fmt.Sprintf("key %q belongs to shard %d of %d, not %d", r.Key, bucket.KeyShard(r.Key, n), n, w.in.Shard)
	}
	return ""
}

// keyGroup is one key's requests in a batch: their indexes and costs.
type keyGroup struct {
	key   string
	idx   []int
	costs []int64
}

// byKey groups the requests with a cost by key, keys in the order they first
// appear, each group's requests in batch order.
func byKey(batch AcquireBatch, costs []int64) []*keyGroup {
	var groups []*keyGroup
	of := map[string]*keyGroup{}
	for i, r := range batch.Requests {
		if costs[i] == 0 {
			continue
		}
		g := of[r.Key]
		if g == nil {
			g = &keyGroup{key: r.Key}
			of[r.Key] = g
			groups = append(groups, g)
		}
		g.idx = append(g.idx, i)
		g.costs = append(g.costs, costs[i])
	}
	return groups
}

// checkKeyed is Check for a keyed bucket's batch, on b (the bucket with its
// due ticks applied): whether any key can grant its first request now, and
// otherwise each request's wait and its key's tokens. A new key finds room
// when the shard has room or holds a key back at its starting level.
func (w *bucketWorkflow) checkKeyed(b *bucket.Bucket, now time.Time, batch AcquireBatch, costs []int64) (bool, []time.Duration, []int64) {
	waits := make([]time.Duration, len(costs))
	tokens := make([]int64, len(costs))
	room := MaxKeysPerShard - len(w.in.keys)
	resting := -1 // counted when first needed
	for _, g := range byKey(batch, costs) {
		k, held := w.in.keys[g.key]
		var kp *bucket.KeyState
		if held {
			kp = &k
		} else if room <= 0 {
			if resting < 0 {
				resting = w.countResting(b, now)
			}
			if room+resting <= 0 {
				w.shardFull(b, now, g.idx, waits)
				continue
			}
		}
		kb := b.Key(kp)
		ok, kw := kb.Check(now, g.costs)
		if ok {
			return true, nil, nil
		}
		for j, i := range g.idx {
			waits[i], tokens[i] = kw[j], kb.Tokens
		}
		if !held {
			room-- // the key would be kept, resting
		}
	}
	return false, waits, tokens
}

// takeKeyed is Take for a keyed bucket's batch: each key's requests, in
// order, from that key's bucket.
func (w *bucketWorkflow) takeKeyed(now time.Time, batch AcquireBatch, costs []int64) ([]bucket.Result, []int64) {
	results := make([]bucket.Result, len(costs))
	tokens := make([]int64, len(costs))
	var ev evictor
	for _, g := range byKey(batch, costs) {
		k, held := w.in.keys[g.key]
		if !held && len(w.in.keys) >= MaxKeysPerShard && !ev.evict(w, now) {
			waits := make([]time.Duration, len(costs))
			w.shardFull(w.b, now, g.idx, waits)
			for _, i := range g.idx {
				results[i] = bucket.Result{RetryAfter: waits[i]}
				w.b.CountDenied(costs[i])
			}
			continue
		}
		var kp *bucket.KeyState
		if held {
			kp = &k
		}
		kb := w.b.Key(kp)
		rs := kb.Take(now, g.costs)
		granted := false
		for j, i := range g.idx {
			results[i], tokens[i] = rs[j], kb.Tokens
			granted = granted || rs[j].Granted
		}
		if w.in.keys == nil {
			w.in.keys = map[string]bucket.KeyState{}
		}
		w.in.keys[g.key] = w.b.Keep(kb, kp, granted, now)
	}
	return results, tokens
}

// shardFull answers requests of a key the shard cannot hold yet: come back
// at the next refill, when keys back at their starting level may be forgotten.
func (w *bucketWorkflow) shardFull(b *bucket.Bucket, now time.Time, idx []int, waits []time.Duration) {
	for _, i := range idx {
		waits[i] = max(b.NextRefill(now).Sub(now), 0)
	}
}

// countResting counts the keys back at their starting level on b as of now.
func (w *bucketWorkflow) countResting(b *bucket.Bucket, now time.Time) int {
	n := 0
	for _, k := range w.in.keys {
		if b.Resting(k, now) {
			n++
		}
	}
	return n
}

// An evictor forgets keys back at their starting level to make room, in key
// order; it lists them once, the first time it is asked, so a batch of many
// new keys costs one pass over the shard.
type evictor struct {
	listed    bool
	candidate []string
}

// evict forgets one key back at its starting level, reporting whether there
// was one.
func (e *evictor) evict(w *bucketWorkflow, now time.Time) bool {
	if !e.listed {
		e.listed = true
		for key, k := range w.in.keys {
			if w.b.Resting(k, now) {
				e.candidate = append(e.candidate, key)
			}
		}
		slices.Sort(e.candidate)
	}
	for len(e.candidate) > 0 {
		key := e.candidate[0]
		e.candidate = e.candidate[1:]
		// A key listed may have taken tokens since.
		if k, held := w.in.keys[key]; held && w.b.Resting(k, now) {
			delete(w.in.keys, key)
			return true
		}
	}
	return false
}

// dropResting forgets every key back at its starting level.
func (w *bucketWorkflow) dropResting(now time.Time) {
	for key, k := range w.in.keys {
		if w.b.Resting(k, now) {
			delete(w.in.keys, key)
		}
	}
}

func (w *bucketWorkflow) sortedKeys() []string {
	keys := make([]string, 0, len(w.in.keys))
	for key := range w.in.keys {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	return keys
}

// keyStatus returns one key's state as of now, on b.
func (w *bucketWorkflow) keyStatus(b *bucket.Bucket, now time.Time, key string) KeyStatus {
	k, held := w.in.keys[key]
	var kp *bucket.KeyState
	if held {
		kp = &k
	}
	kb := b.Key(kp)
	st := KeyStatus{Key: key, Held: held, Tokens: kb.Tokens, Debt: kb.Debt, Used: k.Used, NextRefill: kb.NextRefill(now)}
	if kb.Paused(now) {
		st.PausedUntil = kb.PausedUntil
	}
	return st
}

// keysStatus returns how many keys the shard holds and the emptiest of them.
func (w *bucketWorkflow) keysStatus(b *bucket.Bucket, now time.Time) (int, []KeyStatus) {
	var all []KeyStatus
	for _, key := range w.sortedKeys() {
		all = append(all, w.keyStatus(b, now, key))
	}
	slices.SortStableFunc(all, func(x, y KeyStatus) int { return cmp.Compare(x.Tokens, y.Tokens) })
	return len(w.in.keys), all[:min(len(all), emptiestKeys)]
}

// keyFor returns the key state a settle-up, a report or a manual refill
// names, caught up, for changing; put stores it back.
func (w *bucketWorkflow) keyFor(key string) (*bucket.Bucket, *bucket.KeyState) {
	k, held := w.in.keys[key]
	if !held {
		return w.b.Key(nil), nil
	}
	return w.b.Key(&k), &k
}

func (w *bucketWorkflow) put(key string, kb *bucket.Bucket, kp *bucket.KeyState, now time.Time) {
	if kp == nil && len(w.in.keys) >= MaxKeysPerShard && !new(evictor).evict(w, now) {
		return // the key rests at its starting level: nothing to keep
	}
	if w.in.keys == nil {
		w.in.keys = map[string]bucket.KeyState{}
	}
	w.in.keys[key] = w.b.Keep(kb, kp, false, now)
}

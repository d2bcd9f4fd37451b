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
// that level. With every key of the longest kind, a full shard carries about
// 230 KB of keys, beside at most 370 KB of request and tick IDs.
const MaxKeysPerShard = 2048

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

// byKey groups the indexes of the requests with a cost by key, keys in the
// order they first appear.
func byKey(batch AcquireBatch, costs []int64) (keys []string, idx map[string][]int) {
	idx = map[string][]int{}
	for i, r := range batch.Requests {
		if costs[i] == 0 {
			continue
		}
		if _, seen := idx[r.Key]; !seen {
			keys = append(keys, r.Key)
		}
		idx[r.Key] = append(idx[r.Key], i)
	}
	return keys, idx
}

// only returns costs with every cost but those at idx zeroed.
func only(costs []int64, idx []int) []int64 {
	out := make([]int64, len(costs))
	for _, i := range idx {
		out[i] = costs[i]
	}
	return out
}

// checkKeyed is Check for a keyed bucket's batch, on b (the bucket with its
// due ticks applied): whether any key can grant its first request now, and
// otherwise each request's wait and its key's tokens.
func (w *bucketWorkflow) checkKeyed(b *bucket.Bucket, now time.Time, batch AcquireBatch, costs []int64) (bool, []time.Duration, []int64) {
	waits := make([]time.Duration, len(costs))
	tokens := make([]int64, len(costs))
	keys, idx := byKey(batch, costs)
	for _, key := range keys {
		k, held := w.in.keys[key]
		if !held && len(w.in.keys) >= MaxKeysPerShard {
			w.shardFull(b, now, idx[key], waits)
			continue
		}
		var kp *bucket.KeyState
		if held {
			kp = &k
		}
		kb := b.Key(kp)
		ok, kw := kb.Check(now, only(costs, idx[key]))
		if ok {
			return true, nil, nil
		}
		for _, i := range idx[key] {
			waits[i], tokens[i] = kw[i], kb.Tokens
		}
	}
	return false, waits, tokens
}

// takeKeyed is Take for a keyed bucket's batch: each key's requests, in
// order, from that key's bucket.
func (w *bucketWorkflow) takeKeyed(now time.Time, batch AcquireBatch, costs []int64) ([]bucket.Result, []int64) {
	results := make([]bucket.Result, len(costs))
	tokens := make([]int64, len(costs))
	keys, idx := byKey(batch, costs)
	for _, key := range keys {
		k, held := w.in.keys[key]
		if !held && len(w.in.keys) >= MaxKeysPerShard && !w.evictResting(now) {
			waits := make([]time.Duration, len(costs))
			w.shardFull(w.b, now, idx[key], waits)
			for _, i := range idx[key] {
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
		rs := kb.Take(now, only(costs, idx[key]))
		granted := false
		for _, i := range idx[key] {
			results[i], tokens[i] = rs[i], kb.Tokens
			granted = granted || rs[i].Granted
		}
		if w.in.keys == nil {
			w.in.keys = map[string]bucket.KeyState{}
		}
		w.in.keys[key] = w.b.Keep(kb, kp, granted, now)
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

// evictResting forgets one key back at its starting level, reporting whether
// there was one.
func (w *bucketWorkflow) evictResting(now time.Time) bool {
	for _, key := range w.sortedKeys() {
		if w.b.Resting(w.in.keys[key], now) {
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
	if kp == nil && len(w.in.keys) >= MaxKeysPerShard && !w.evictResting(now) {
		return // the key rests at its starting level: nothing to keep
	}
	if w.in.keys == nil {
		w.in.keys = map[string]bucket.KeyState{}
	}
	w.in.keys[key] = w.b.Keep(kb, kp, false, now)
}

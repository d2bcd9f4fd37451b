package workflows

import (
	"slices"
	"time"
)

// recent remembers IDs in the order they were added, forgetting the oldest
// beyond a size or an age. It is a plain value so it can be carried across
// continue-as-new.
type recent struct {
	IDs []string `json:"ids,omitempty"`
	// At holds, for each ID, when it was added, in Unix milliseconds of workflow time.
	At []int64 `json:"at,omitempty"`
	// Costs holds, for each granted request, the tokens a refund may still
	// give back (0: none, or not recorded); shorter than IDs when the first
	// IDs were added without one.
	Costs []int64 `json:"costs,omitempty"`

	index map[string]struct{}
	bytes int // sum of len(IDs)
}

// reindex rebuilds the lookup index from IDs; call it once after decoding.
func (r *recent) reindex() {
	r.index = make(map[string]struct{}, len(r.IDs))
	r.bytes = 0
	for _, id := range r.IDs {
		r.index[id] = struct{}{}
		r.bytes += len(id)
	}
}

// has reports whether id was added and not yet forgotten.
func (r *recent) has(id string) bool {
	_, ok := r.index[id]
	return ok
}

// add remembers id, added at now.
func (r *recent) add(id string, now time.Time) { r.addCost(id, now, 0) }

// addCost remembers id, added at now, with the tokens a refund may give back.
func (r *recent) addCost(id string, now time.Time, cost int64) {
	if r.index == nil {
		r.reindex()
	}
	if r.has(id) {
		return
	}
	if cost != 0 || len(r.Costs) > 0 {
		for len(r.Costs) < len(r.IDs) {
			r.Costs = append(r.Costs, 0)
		}
		r.Costs = append(r.Costs, cost)
	}
	r.IDs = append(r.IDs, id)
	r.At = append(r.At, now.UnixMilli())
	r.index[id] = struct{}{}
	r.bytes += len(id)
}

// take takes up to tokens from what a refund may still give back for id,
// if id was added at or after since, and returns how many it took; if id was
// added before since, it returns in late how many it would have taken, and
// nothing may be refunded for id any more.
func (r *recent) take(id string, since time.Time, tokens int64) (n, late int64) {
	if !r.has(id) {
		return 0, 0
	}
	i := slices.Index(r.IDs, id)
	if i < 0 || i >= len(r.Costs) {
		return 0, 0
	}
	n = min(tokens, r.Costs[i])
	r.Costs[i] -= n
	if r.At[i] < since.UnixMilli() {
		return 0, n
	}
	return n, 0
}

// trim forgets IDs older than maxAge before now, and the oldest beyond maxLen
// IDs or, when maxBytes > 0, beyond maxBytes bytes of IDs.
func (r *recent) trim(now time.Time, maxAge time.Duration, maxLen, maxBytes int) {
	if r.index == nil {
		r.reindex()
	}
	oldest := now.Add(-maxAge).UnixMilli()
	n := 0
	for n < len(r.IDs) && (len(r.IDs)-n > maxLen || maxBytes > 0 && r.bytes > maxBytes || r.At[n] < oldest) {
		delete(r.index, r.IDs[n])
		r.bytes -= len(r.IDs[n])
		n++
	}
	if n > 0 {
		r.IDs = append([]string(nil), r.IDs[n:]...)
		r.At = append([]int64(nil), r.At[n:]...)
		r.Costs = append([]int64(nil), r.Costs[min(n, len(r.Costs)):]...)
		if len(r.Costs) == 0 {
			r.Costs = nil
		}
	}
}

// len returns the number of IDs remembered.
func (r *recent) len() int { return len(r.IDs) }

// size returns the total length of the IDs remembered.
func (r *recent) size() int {
	if r.index == nil {
		r.reindex()
	}
	return r.bytes
}

// IsZero reports whether nothing is remembered, for JSON's omitzero.
func (r recent) IsZero() bool { return len(r.IDs) == 0 }

package workflows

import "time"

// recent remembers IDs in the order they were added, forgetting the oldest
// beyond a size or an age. It is a plain value so it can be carried across
// continue-as-new.
type recent struct {
	IDs []string `json:"ids,omitempty"`
	// At holds, for each ID, when it was added, in Unix milliseconds of workflow time.
	At []int64 `json:"at,omitempty"`

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
func (r *recent) add(id string, now time.Time) {
	if r.index == nil {
		r.reindex()
	}
	if r.has(id) {
		return
	}
	r.IDs = append(r.IDs, id)
	r.At = append(r.At, now.UnixMilli())
	r.index[id] = struct{}{}
	r.bytes += len(id)
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

package workflows

import "time"

// Fleet hints: how many processes send a bucket acquire batches.
const (
	// MaxProcessesSeen bounds the processes a bucket counts
	// (AcquireResponse.Processes), and holds in memory (twice: see
	// bucketWorkflow.asking).
	MaxProcessesSeen = 256
	// ProcessWindow: a process is counted until this long after its latest batch.
	ProcessWindow = time.Minute
)

// fleet counts the processes that sent acquire batches within ProcessWindow
// (AcquireBatch.Process), at most MaxProcessesSeen of them: the hint
// AcquireResponse.Processes (a bucket keeps two, see bucketWorkflow.asking).
// Nothing is carried across continue-as-new: a run counts from zero. A
// process with an ID longer than MaxIDLength is not counted.
type fleet struct {
	seen map[string]time.Time
}

// see counts the process that sent a batch at now.
func (f *fleet) see(process string, now time.Time) {
	if process == "" || len(process) > MaxIDLength {
		return
	}
	if f.seen == nil {
		f.seen = map[string]time.Time{}
	}
	if _, ok := f.seen[process]; !ok && len(f.seen) >= MaxProcessesSeen {
		f.forget(now)
	}
	if now.After(f.seen[process]) {
		f.seen[process] = now
	}
}

// count returns how many processes sent a batch within ProcessWindow of now.
func (f *fleet) count(now time.Time) int {
	n := 0
	for _, t := range f.seen {
		if now.Sub(t) <= ProcessWindow {
			n++
		}
	}
	return n
}

// forget drops the processes outside the window and, if that frees no room,
// the one seen longest ago (the least ID among equals: the choice does not
// depend on the map's order).
func (f *fleet) forget(now time.Time) {
	oldest := ""
	for p, t := range f.seen {
		switch {
		case now.Sub(t) > ProcessWindow:
			delete(f.seen, p)
		case oldest == "" || t.Before(f.seen[oldest]) || t.Equal(f.seen[oldest]) && p < oldest:
			oldest = p
		}
	}
	if len(f.seen) >= MaxProcessesSeen {
		delete(f.seen, oldest)
	}
}

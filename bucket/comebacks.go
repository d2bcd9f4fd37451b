package bucket

import "time"

// Comebacks paces the requests a bucket refuses: it counts those refused
// since the bucket last told a refused request to come back at another time
// (a refill, usually), and tells the n-th (from 0) to come back
// n × ComebackGap later than the first. The zero value is ready to use.
type Comebacks struct {
	at time.Time // when the refused were told to come back
	n  int       // how many were told so
}

// ComebackGap separates the refusals told to come back at the same time. The
// processes of a fleet, each refused once per refill, then reach the bucket
// one after another instead of at once, in the order they were refused, and
// never many Updates at a time: Temporal serves 10 in flight per workflow and
// answers more with ResourceExhausted, which aborts the rest (see
// interceptor/update.go). 64 processes take 1.28 s after a refill; a lone
// process, never refused together with another, waits nothing more. With
// 10 ms, 64 processes on a machine busy with other work tipped the bucket
// into that congestion in 1 of 2 runs of 20 s; with 20 ms, in none of 4.
const ComebackGap = 20 * time.Millisecond

// MaxComebacks bounds the spread of one refill's comebacks (MaxComebacks ×
// ComebackGap, 2 min); beyond, the refused share the last slot.
const MaxComebacks = 6000

// Next returns how much later than at a refused request should come back.
func (c *Comebacks) Next(at time.Time) time.Duration {
	if !at.Equal(c.at) {
		c.at, c.n = at, 0
	}
	d := time.Duration(c.n) * ComebackGap
	c.n = min(c.n+1, MaxComebacks)
	return d
}

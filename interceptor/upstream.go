package interceptor

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// DefaultMaxPause caps a pause an upstream asks for, unless Options.MaxPause says otherwise.
const DefaultMaxPause = time.Hour

// absurd is how far ahead a time an upstream gives may lie before it is
// taken for a mistake and ignored, rather than capped at MaxPause.
const absurd = 24 * time.Hour

// Upstream is what an API said about its quota: come back no earlier than
// Pause from now (0: no pause), and, when Remaining is not nil, that many
// calls are left. The pause is relative so that clocks that disagree, the
// worker's and the server's, do not stretch or shorten it.
type Upstream struct {
	Pause     time.Duration
	Remaining *int64
}

// A Reporter is a Limiter that passes on what an upstream said to the bucket
// behind it, for every worker (see ReportHTTP). *Acquirer and tbtest.Limiter
// are Reporters. id names the report: a report sent again is applied once.
type Reporter interface {
	Report(ctx context.Context, bucket, id string, u Upstream) error
}

// ParseHTTP reads what an HTTP response's status and headers say about the
// quota, as of now: Retry-After, in seconds or as an HTTP date, on any
// response; RateLimit-Remaining with RateLimit-Reset (seconds from now, the
// IETF draft), or X-RateLimit-Remaining with X-RateLimit-Reset (a Unix time,
// as GitHub sends it, or seconds from now when small). Nothing left until a
// reset is a pause until the reset; a 429 that says no more is nothing left.
// A pause is capped at maxPause. It returns, apart, why it ignored a header:
// not a number, negative, or more than a day away.
func ParseHTTP(status int, h http.Header, now time.Time, maxPause time.Duration) (Upstream, []string) {
	var u Upstream
	var problems []string
	var pauseUntil, reset time.Time
	ignore := func(name, value, why string) {
		problems = append(problems, fmt.Sprintf("%s: %q %s: ignored", name, value, why))
	}
	at := func(name, value string, unix bool) (time.Time, bool) {
		value = strings.TrimSpace(value)
		if n, err := strconv.ParseInt(value, 10, 64); err == nil {
			var t time.Time
			switch {
			case n < 0:
				ignore(name, value, "is negative")
				return time.Time{}, false
			case unix && n >= 1_000_000_000:
				t = time.Unix(n, 0)
			case n > int64(absurd/time.Second):
				ignore(name, value, "is more than a day away")
				return time.Time{}, false
			default:
				t = now.Add(time.Duration(n) * time.Second)
			}
			if t.After(now.Add(absurd)) {
				ignore(name, value, "is more than a day away")
				return time.Time{}, false
			}
			return t, true
		}
		if t, err := http.ParseTime(value); err == nil && name == "Retry-After" {
			if t.After(now.Add(absurd)) {
				ignore(name, value, "is more than a day away")
				return time.Time{}, false
			}
			return t, true
		}
		ignore(name, value, "is not a number of seconds or a date")
		return time.Time{}, false
	}
	if v := h.Get("Retry-After"); v != "" {
		if t, ok := at("Retry-After", v, false); ok && t.After(now) {
			pauseUntil = t
		}
	}
	for _, names := range [][3]string{{"RateLimit-Remaining", "RateLimit-Reset", ""}, {"X-RateLimit-Remaining", "X-RateLimit-Reset", "unix"}} {
		rv := h.Get(names[0])
		if rv == "" || u.Remaining != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(rv), 10, 64)
		if err != nil || n < 0 {
			ignore(names[0], rv, "is not a count")
			continue
		}
		u.Remaining = &n
		if v := h.Get(names[1]); v != "" {
			if t, ok := at(names[1], v, names[2] == "unix"); ok {
				reset = t
			}
		}
	}
	if u.Remaining != nil && *u.Remaining == 0 && reset.After(now) && reset.After(pauseUntil) {
		pauseUntil = reset // nothing left until the reset
	}
	if status == http.StatusTooManyRequests && pauseUntil.IsZero() && u.Remaining == nil {
		zero := int64(0)
		u.Remaining = &zero
	}
	if !pauseUntil.IsZero() {
		u.Pause = min(pauseUntil.Sub(now), maxPause)
	}
	return u, problems
}

// ReportHTTP passes on, from inside a guarded activity, what an HTTP
// response of the API behind bucketName ("" when the activity draws from one
// bucket) said about the quota (see ParseHTTP), for every worker: a pause
// makes the bucket grant nothing until it ends, a count of what is left
// lowers its tokens. Headers it cannot trust are logged and ignored.
//
// For a 429, or any response that pauses the bucket, it returns the error the
// activity should fail with: RateLimited, whose NextRetryDelay is the end of
// the pause (or the bucket's next refill), as a denial — retryable and benign.
// Otherwise it returns nil, or why the report could not be sent.
func ReportHTTP(ctx context.Context, bucketName string, resp *http.Response) error {
	h, g, err := heldGrant(ctx, "ReportHTTP", bucketName)
	if err != nil {
		return err
	}
	u, problems := ParseHTTP(resp.StatusCode, resp.Header, time.Now(), h.ic.opts.MaxPause)
	for _, p := range problems {
		activity.GetLogger(ctx).Warn("Ignored a quota header the upstream sent", "Bucket", g.Bucket, "Problem", p)
	}
	return h.ic.report(ctx, h, g, u, resp.StatusCode == http.StatusTooManyRequests)
}

// PauseUntil is ReportHTTP for an API that is not HTTP: the upstream asked
// callers to come back no earlier than until (capped at Options.MaxPause).
// It returns the RateLimited error the activity should fail with.
func PauseUntil(ctx context.Context, bucketName string, until time.Time) error {
	h, g, err := heldGrant(ctx, "PauseUntil", bucketName)
	if err != nil {
		return err
	}
	return h.ic.report(ctx, h, g, Upstream{Pause: min(time.Until(until), h.ic.opts.MaxPause)}, true)
}

// ReportRemaining is ReportHTTP for an API that is not HTTP: the upstream
// says remaining calls are left until reset. Nothing left is a pause until
// reset, and returns the RateLimited error the activity should fail with.
func ReportRemaining(ctx context.Context, bucketName string, remaining int64, reset time.Time) error {
	h, g, err := heldGrant(ctx, "ReportRemaining", bucketName)
	if err != nil {
		return err
	}
	if remaining < 0 {
		return fmt.Errorf("interceptor: ReportRemaining: remaining must not be negative, got %d", remaining)
	}
	u := Upstream{Remaining: &remaining}
	if remaining == 0 {
		u.Pause = min(max(time.Until(reset), 0), h.ic.opts.MaxPause)
	}
	return h.ic.report(ctx, h, g, u, remaining == 0)
}

// heldGrant returns the running guarded activity's holdings and its grant of bucketName.
func heldGrant(ctx context.Context, fn, bucketName string) (*held, Grant, error) {
	h, ok := ctx.Value(grantKey{}).(*held)
	if !ok {
		return nil, Grant{}, fmt.Errorf("interceptor: %s outside a guarded activity", fn)
	}
	if bucketName == "" && len(h.grants) == 1 {
		bucketName = h.grants[0].Bucket
	}
	for _, g := range h.grants {
		if g.Bucket == bucketName {
			return h, g, nil
		}
	}
	return nil, Grant{}, fmt.Errorf("interceptor: %s: the activity draws from no bucket %q", fn, bucketName)
}

// report sends u to the bucket, and returns the RateLimited error the
// activity fails with when the upstream refused the call.
func (i *Interceptor) report(ctx context.Context, h *held, g Grant, u Upstream, refused bool) error {
	var sendErr error
	if u.Pause > 0 || u.Remaining != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		if gd := h.guard(g.Bucket); gd.Shards > 0 {
			if kl, ok := h.lim.(KeyedLimiter); ok {
				sendErr = kl.ReportKey(rctx, Key{Bucket: g.Bucket, Key: h.key, Shards: gd.Shards}, reportID(h.id, g.Bucket), u)
			}
		} else if r, ok := h.lim.(Reporter); ok {
			sendErr = r.Report(rctx, g.Bucket, reportID(h.id, g.Bucket), u)
		}
		cancel()
	}
	if !refused && u.Pause <= 0 {
		return sendErr
	}
	if sendErr != nil {
		activity.GetLogger(ctx).Warn("Could not tell the bucket what the upstream said", "Bucket", g.Bucket, "Error", sendErr)
	}
	wait := time.Until(g.NextRefill)
	if u.Pause > 0 {
		wait = u.Pause
	}
	return i.rateLimited([]Denial{{Bucket: g.Bucket, Cost: g.Cost, RetryAfter: max(wait, minRetryDelay), NextRefill: g.NextRefill}})
}

// reportID names the report of one attempt's call against one bucket.
func reportID(request, bucketName string) string {
	sum := sha256.Sum256([]byte(request + "\x00" + bucketName))
	return "upstream-" + base64.RawURLEncoding.EncodeToString(sum[:16])
}

// Report passes on what the upstream said to the named bucket, with an
// upstream signal that the bucket applies once per id; and while a pause
// lasts, this process refuses that bucket's callers itself.
func (a *Acquirer) Report(ctx context.Context, bucketName, id string, u Upstream) error {
	return a.ReportKey(ctx, Key{Bucket: bucketName}, id, u)
}

// ReportKey is Report for one key of a keyed bucket: that key alone pauses.
func (a *Acquirer) ReportKey(ctx context.Context, k Key, id string, u Upstream) error {
	t, err := k.target()
	if err != nil {
		return err
	}
	if id == "" || len(id) > workflows.MaxIDLength {
		return errors.New("interceptor: Report: a report id must be 1 to 64 bytes long")
	}
	if u.Pause > 0 && !t.keyed {
		a.mu.Lock()
		q := a.queueFor(t)
		if !slices.Contains(q.paused, id) { // a repeat moves nothing, as in the bucket
			if q.paused = append(q.paused, id); len(q.paused) > maxPauseReports {
				q.paused = slices.Delete(q.paused, 0, len(q.paused)-maxPauseReports)
			}
			if until := a.now().Add(u.Pause); until.After(q.quiet) {
				q.quiet, q.quietEnds, q.quietTokens = until, until, -1 // every caller, until the pause ends
				q.quietAnswer = Decision{}
			}
		}
		a.mu.Unlock()
	}
	err = a.c.SignalWorkflow(ctx, t.wf, "", workflows.UpstreamSignal,
		workflows.Upstream{ID: id, PauseFor: u.Pause, Remaining: u.Remaining, Key: k.Key})
	if err != nil {
		return fmt.Errorf("bucket %q: reporting the upstream's answer: %w", k.Bucket, err)
	}
	return nil
}

var _ Reporter = (*Acquirer)(nil)

// maxPauseReports bounds how many pausing reports' IDs a process remembers
// per bucket, to apply each once (queue.paused).
const maxPauseReports = 16

// pausedUntil returns when a pause of the named bucket that this process
// reported ends, or zero when there is none.
func (a *Acquirer) pausedUntil(bucketName string) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	q := a.queues[workflows.BucketID(bucketName)]
	if q == nil || q.quietTokens != -1 || !a.now().Before(q.quiet) {
		return time.Time{}
	}
	return q.quiet
}

// pausedHere returns when a pause of g's bucket that this process heard of
// ends, if lim is an Acquirer and g's bucket is not keyed.
func pausedHere(lim Limiter, g bucket.Guard) time.Time {
	a, ok := lim.(*Acquirer)
	if !ok || g.Shards > 0 {
		return time.Time{}
	}
	return a.pausedUntil(g.Bucket)
}

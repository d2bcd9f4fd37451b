package bucket

import (
	"time"

	"github.com/robfig/cron/v3"
)

// calendarNext returns the first instant after ts that matches spec in loc,
// walking the calendar exactly as Temporal's scheduler does
// (go.temporal.io/server/service/worker/scheduler/calendar.go, MIT licensed),
// so that tb's refill forecasts agree with Temporal across daylight-saving
// changes, where robfig/cron's own Next differs (it fires twice in a repeated hour).
// The fields are those robfig/cron parsed. It gives up after five years, like robfig/cron.
func calendarNext(spec *cron.SpecSchedule, loc *time.Location, ts time.Time) time.Time {
	is := func(bits uint64, v int) bool { return bits&(1<<uint(v)) != 0 }

	ts = ts.In(loc)
	y, mo, d := ts.Date()
	h, m, s := ts.Clock()
	lastYear := y + 5
	dstOffset := time.Duration(0)
	if ts.Add(-time.Hour).Hour() == h {
		dstOffset = time.Hour // in the second copy of a repeated hour
	}
	s++ // strictly after ts

outer:
	for {
		if s >= 60 {
			m, s = m+1, 0
		}
		if m >= 60 {
			prev := time.Date(y, mo, d, h, 0, 0, 0, loc)
			h, m = h+1, 0
			next := time.Date(y, mo, d, h, 0, 0, 0, loc)
			// Two hours apart: a repeated hour was skipped over; try it again, offset.
			if dstOffset == 0 && next.Sub(prev) > time.Hour {
				h, dstOffset = h-1, time.Hour
			} else {
				dstOffset = 0
			}
		}
		if h >= 24 {
			d, h = d+1, 0
		}
		if d > daysIn(mo, y) {
			mo, d = mo+1, 1
		}
		if mo > time.December {
			y, mo = y+1, time.January
		}
		if y > lastYear {
			return time.Time{}
		}
		for !is(spec.Month, int(mo)) {
			mo, d, h, m, s, dstOffset = mo+1, 1, 0, 0, 0, 0
			if mo > time.December {
				continue outer
			}
		}
		for !is(spec.Dom, d) || !is(spec.Dow, int(time.Date(y, mo, d, h, m, s, 0, loc).Weekday())) {
			d, h, m, s, dstOffset = d+1, 0, 0, 0, 0
			if d > daysIn(mo, y) {
				continue outer
			}
		}
		for !is(spec.Hour, h) {
			h, m, s, dstOffset = h+1, 0, 0, 0
			if h >= 24 {
				continue outer
			}
		}
		for !is(spec.Minute, m) {
			m, s = m+1, 0
			if m >= 60 {
				continue outer
			}
		}
		for !is(spec.Second, s) {
			if s++; s >= 60 {
				continue outer
			}
		}
		next := time.Date(y, mo, d, h, m, s, 0, loc)
		// A wall time skipped by a daylight-saving jump normalises to another hour.
		if next.Hour() != h {
			h, m, s = h+1, 0, 0
			continue outer
		}
		return next.Add(dstOffset)
	}
}

func daysIn(m time.Month, y int) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

package bucket

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// A Schedule is a refill schedule that robfig/cron and Temporal Schedules read
// the same way. Next returns the instants a Temporal Schedule built from
// [Schedule.Cron] or [Schedule.Every] fires at, daylight-saving changes included.
//
// The accepted grammar is the intersection of the two readers:
//
//   - five-field cron: minute hour day-of-month month day-of-week;
//   - the descriptors @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly;
//   - "@every <duration>" with a whole number of seconds, from 1s to [MaxEvery];
//     Temporal aligns intervals to the Unix epoch, and so does Next;
//   - an optional "CRON_TZ=<zone> " (or "TZ=") prefix, or the bucket's timezone field,
//     naming an IANA zone; without either the schedule is read in UTC.
//
// It refuses crons of six or seven fields (Temporal reads a sixth field as the
// year, robfig/cron a first one as the second), "?", crons in which neither
// day-of-month nor day-of-week is * or */1 (robfig/cron fires when either
// matches, Temporal only when both do), and the zones "Local" and "localtime",
// which are the zone of whichever process reads them.
type Schedule struct {
	cron     string        // five-field cron or descriptor, without a time-zone prefix; "" for @every
	every    time.Duration // > 0 for @every
	location *time.Location
	spec     *cron.SpecSchedule
}

var descriptors = map[string]bool{
	"@yearly": true, "@annually": true, "@monthly": true, "@weekly": true,
	"@daily": true, "@midnight": true, "@hourly": true,
}

// MaxEvery is the longest @every interval: 8784h, 366 days. Temporal accepts
// any interval from 1s up to the largest Go duration (about 292 years) but
// fires one only at multiples of it since the Unix epoch, and never after the
// year 2100: an interval of a century fires once or never, and arithmetic on
// ones near the largest duration overflows. A year, the period of @yearly,
// is far inside both.
const MaxEvery = 366 * 24 * time.Hour

// A zoneError is a problem with the time zone a schedule is read in.
type zoneError struct{ error }

func (e zoneError) Unwrap() error { return e.error }

// robfig/cron marks a field written * (or */1, or a list holding *) with this
// bit; when neither day field carries it, it fires on days matching either.
const starBit = 1 << 63

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a refill schedule. timezone is an IANA zone name, or ""
// for UTC (Temporal's default; robfig/cron's default of the local zone is not used).
func ParseSchedule(expr, timezone string) (*Schedule, error) {
	return parseSchedule(expr, timezone, true)
}

// parseSchedule parses a refill schedule; strict is false for one carried from
// an earlier version of tb (see readCarried), which may restrict both day
// fields or name an interval over MaxEvery: both fire as they did.
func parseSchedule(expr, timezone string, strict bool) (*Schedule, error) {
	expr = strings.TrimSpace(expr)
	if expr == "" {
		return nil, errors.New("is required")
	}
	if key, zone, rest, ok := cutZonePrefix(expr); ok {
		if rest == "" {
			return nil, fmt.Errorf("%q has a time zone but no schedule after it", expr)
		}
		if zone == "" {
			return nil, fmt.Errorf("%q names no time zone after %s=; write %[2]s=UTC or an IANA zone such as %[2]s=Europe/Paris", expr, key)
		}
		if timezone != "" && timezone != zone {
			return nil, fmt.Errorf("names time zone %q but the timezone field says %q; keep one", zone, timezone)
		}
		timezone, expr = zone, rest
	}
	loc, err := loadZone(timezone, strict)
	if err != nil {
		return nil, err
	}

	if rest, ok := strings.CutPrefix(expr, "@every"); ok {
		return parseEvery(expr, strings.TrimSpace(rest), loc, strict)
	}
	if strings.HasPrefix(expr, "@") {
		if !descriptors[expr] {
			return nil, fmt.Errorf("unknown descriptor %q; use @yearly, @monthly, @weekly, @daily, @hourly or @every <duration>", expr)
		}
	} else if err := checkCronFields(expr); err != nil {
		return nil, err
	}
	parsed, err := cronParser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", expr, err)
	}
	spec := parsed.(*cron.SpecSchedule)
	if strict && spec.Dom&starBit == 0 && spec.Dow&starBit == 0 {
		return nil, fmt.Errorf("%q restricts both day-of-month and day-of-week (a day field is unrestricted only when it holds * or */1): "+
			"robfig/cron fires when either matches, Temporal only when both do; make one of them *", expr)
	}
	spec.Location = loc
	s := &Schedule{cron: expr, location: loc, spec: spec}
	// robfig/cron gives up after five years; a spec like "0 0 30 2 *" never fires.
	if s.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return nil, fmt.Errorf("%q never fires", expr)
	}
	return s, nil
}

func parseEvery(expr, arg string, loc *time.Location, strict bool) (*Schedule, error) {
	d, err := time.ParseDuration(arg)
	if err != nil {
		return nil, fmt.Errorf("%q: want @every <duration>, such as @every 10s or @every 1h30m", expr)
	}
	if d < time.Second {
		return nil, fmt.Errorf("%q: Temporal Schedules refuse intervals under 1s", expr)
	}
	if d%time.Second != 0 {
		return nil, fmt.Errorf("%q: the interval must be a whole number of seconds", expr)
	}
	if strict && d > MaxEvery {
		return nil, fmt.Errorf("%q: the interval may be at most %dh (366 days); Temporal fires an interval at multiples of it since 1970 "+
			"and never after 2100, so a longer one fires rarely or never", expr, MaxEvery/time.Hour)
	}
	return &Schedule{every: d, location: loc}, nil
}

// cutZonePrefix splits "CRON_TZ=<zone> <rest>" (or "TZ=") as Temporal does: the
// zone runs to the first space.
func cutZonePrefix(expr string) (key, zone, rest string, ok bool) {
	if !strings.HasPrefix(expr, "TZ=") && !strings.HasPrefix(expr, "CRON_TZ=") {
		return "", "", expr, false
	}
	prefix, rest, _ := strings.Cut(expr, " ")
	key, zone, _ = strings.Cut(prefix, "=")
	return key, zone, strings.TrimSpace(rest), true
}

// processZone reports whether a zone name means the zone of the process that
// loads it: time.LoadLocation returns time.Local for "Local", and many systems
// link zoneinfo's "localtime" to /etc/localtime.
func processZone(name string) bool {
	return strings.EqualFold(name, "Local") || strings.EqualFold(path.Base(name), "localtime")
}

// loadZone loads an IANA zone; "" is UTC. It never returns the process's zone.
// Unless strict, it loads names that are not in canonical form, as
// time.LoadLocation does.
func loadZone(name string, strict bool) (*time.Location, error) {
	switch {
	case name == "" || name == "UTC":
		return time.UTC, nil
	case processZone(name):
		return nil, zoneError{fmt.Errorf("%q is the time zone of whichever process reads it (each worker, the Temporal server), "+
			"so they would disagree; name an IANA zone such as Europe/Paris, or UTC", name)}
	case strict && path.Clean(name) != name:
		return nil, zoneError{fmt.Errorf("unknown time zone %q: not a zone name", name)}
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, zoneError{fmt.Errorf("unknown time zone %q", name)}
	}
	return loc, nil
}

// checkCronFields rejects what robfig/cron and Temporal would read differently.
func checkCronFields(expr string) error {
	fields := strings.Fields(expr)
	switch len(fields) {
	case 5:
	case 6, 7:
		return fmt.Errorf("%q has %d fields: Temporal reads a 6th field as the YEAR and robfig/cron reads a 1st as the SECOND, "+
			"so tb accepts 5 fields (minute hour day-of-month month day-of-week); use @every <duration> for sub-minute refills", expr, len(fields))
	default:
		return fmt.Errorf("%q has %d fields; want 5: minute hour day-of-month month day-of-week", expr, len(fields))
	}
	if strings.Contains(expr, "?") {
		return fmt.Errorf("%q uses ?, which Temporal does not read; use *", expr)
	}
	for _, field := range fields {
		for _, item := range strings.Split(field, ",") {
			// robfig/cron reads "*-5" as "*"; Temporal refuses it.
			if strings.HasPrefix(item, "*") && !starItem.MatchString(item) {
				return fmt.Errorf("%q: %q: only a step may follow *, as in */15", expr, item)
			}
		}
	}
	return nil
}

var starItem = regexp.MustCompile(`^\*(/[0-9]+)?$`)

// Next returns the first refill instant strictly after t, in UTC, or the zero
// time if the schedule never fires again.
func (s *Schedule) Next(t time.Time) time.Time {
	if s.every > 0 {
		// Temporal: ((ts-phase)/interval+1)*interval+phase over whole Unix seconds.
		sec := int64(s.every / time.Second)
		return time.Unix((floorDiv(t.Unix(), sec)+1)*sec, 0).UTC()
	}
	if next := calendarNext(s.spec, s.location, t); !next.IsZero() {
		return next.UTC()
	}
	return time.Time{}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Cron returns the five-field cron or descriptor for a Temporal ScheduleSpec's
// CronExpressions, without a time-zone prefix, or "" when the schedule is an interval.
func (s *Schedule) Cron() string { return s.cron }

// Every returns the interval of an @every schedule, or 0.
func (s *Schedule) Every() time.Duration { return s.every }

// TimeZone returns the IANA zone the schedule is read in ("UTC" by default).
func (s *Schedule) TimeZone() string { return s.location.String() }

// String returns the schedule as written, without a time-zone prefix.
func (s *Schedule) String() string {
	if s.every > 0 {
		return "@every " + s.every.String()
	}
	return s.cron
}

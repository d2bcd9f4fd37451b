package bucket

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCheckTaskQueue(t *testing.T) {
	for _, q := range []string{"tb", "mail-limits", "team/limits", "Ünïcode-queue", strings.Repeat("q", MaxTaskQueueLength)} {
		if err := CheckTaskQueue(q); err != nil {
			t.Errorf("CheckTaskQueue(%q) = %v, want nil", q, err)
		}
	}
	for _, tt := range []struct{ queue, want string }{
		{"", "is empty"},
		{"\xffq", "is not valid UTF-8"},
		{"a\x00b", "control character (U+0000)"},
		{"a\nb", "control character (U+000A)"},
		{"a\u0085b", "control character (U+0085)"},
		{" q", "leading or trailing spaces"},
		{"q\u00a0", "leading or trailing spaces"},
		{"/_sys/q/3", `reserves for task queue partitions`},
		{"temporal-sys-per-ns-tq", "reserves for its own task queues"},
		{"temporal-sys-worker-controller-per-ns-tq", "reserves for its own task queues"},
		{strings.Repeat("é", 128), "is 256 bytes long; at most 255"},
	} {
		err := CheckTaskQueue(tt.queue)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckTaskQueue(%q) = %v, want an error containing %q", tt.queue, err, tt.want)
		}
	}
}

// Every string a Spec carries is bounded: the spec travels in the bucket
// workflow's continue-as-new payload.
func TestSpecStringsAreBounded(t *testing.T) {
	ok := Spec{Name: "a", Schedule: "@hourly", Amount: 1, Maximum: 1}
	for _, tt := range []struct {
		field string
		edit  func(*Spec)
	}{
		{"name", func(s *Spec) { s.Name = strings.Repeat("n", MaxNameLength+1) }},
		{"schedule", func(s *Spec) { s.Schedule = "0 * * * *" + strings.Repeat(" ", MaxScheduleLength) }},
		{"timezone", func(s *Spec) { s.Timezone = strings.Repeat("Z", MaxTimezoneLength+1) }},
		{"task_queue", func(s *Spec) { s.TaskQueue = strings.Repeat("q", MaxTaskQueueLength+1) }},
	} {
		s := ok
		tt.edit(&s)
		var verr ValidationError
		if err := s.Validate(); !errors.As(err, &verr) || len(verr) != 1 || verr[0].Field != tt.field {
			t.Errorf("%s too long: Validate() = %v, want one error on %s", tt.field, err, tt.field)
		}
	}
	// The longest useful cron: every value of every field listed, with a zone.
	long := "CRON_TZ=America/Argentina/ComodRivadavia " + list(0, 59) + " " + list(0, 23) + " " + list(1, 31) + " " +
		"JAN,FEB,MAR,APR,MAY,JUN,JUL,AUG,SEP,OCT,NOV,DEC *"
	if len(long) > MaxScheduleLength {
		t.Errorf("a cron listing every value is %d bytes, over MaxScheduleLength (%d)", len(long), MaxScheduleLength)
	}
	s := ok
	s.Schedule = long
	if err := s.Validate(); err != nil {
		t.Errorf("the longest useful cron: %v", err)
	}
}

func list(from, to int) string {
	var parts []string
	for i := from; i <= to; i++ {
		parts = append(parts, strconv.Itoa(i))
	}
	return strings.Join(parts, ",")
}

// Earlier versions of tb accepted the zone Local; a bucket workflow still
// carrying such a spec is read in UTC, the zone its Schedule fired in.
func TestLegacySpecLocalIsUTC(t *testing.T) {
	saved := time.Local
	t.Cleanup(func() { time.Local = saved })
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	time.Local = tokyo
	from := time.Date(2026, 11, 26, 17, 33, 20, 0, time.UTC)
	for _, tt := range []struct{ schedule, timezone, wantSchedule, wantZone string }{
		{"0 9 * * *", "Local", "0 9 * * *", "UTC"},
		{"0 9 * * *", "localtime", "0 9 * * *", "UTC"},
		{"CRON_TZ=Local 0 9 * * *", "", "CRON_TZ=UTC 0 9 * * *", ""},
		{"TZ=Local 0 9 * * *", "Local", "TZ=UTC 0 9 * * *", "UTC"},
		{"  CRON_TZ= 0 9 * * *", "", "0 9 * * *", ""},
	} {
		old := Spec{Name: "a", Schedule: tt.schedule, Timezone: tt.timezone, Amount: 1, Maximum: 1}
		if old.Validate() == nil {
			t.Errorf("%+v: Validate accepts it; want it refused", old)
		}
		s, changed := UpgradeLegacySpec(old)
		if !changed || s.Schedule != tt.wantSchedule || s.Timezone != tt.wantZone {
			t.Errorf("UpgradeLegacySpec(%q, %q) = %q, %q, %v; want %q, %q, true", tt.schedule, tt.timezone, s.Schedule, s.Timezone, changed, tt.wantSchedule, tt.wantZone)
			continue
		}
		if err := s.Validate(); err != nil {
			t.Errorf("upgraded %+v: %v", s, err)
			continue
		}
		sched, _ := s.ParseSchedule()
		if got := sched.Next(from).Format(time.RFC3339); got != "2026-11-27T09:00:00Z" {
			t.Errorf("upgraded %+v fires at %s, want 09:00 UTC", s, got)
		}
	}
	current := Spec{Name: "a", Schedule: "CRON_TZ=Europe/Paris 0 9 * * *", Amount: 1, Maximum: 1}
	if s, changed := UpgradeLegacySpec(current); changed || s != current {
		t.Errorf("UpgradeLegacySpec changed a current spec: %+v, %v", s, changed)
	}
}

// A bucket workflow reads the spec it carried with readCarried: what an
// earlier version of tb accepted keeps running, read as its Schedule fires.
func TestReadCarriedKeepsEarlierSpecsRunning(t *testing.T) {
	saved := time.Local
	t.Cleanup(func() { time.Local = saved })
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	time.Local = tokyo
	from := time.Date(2027, 3, 5, 12, 0, 0, 0, time.UTC) // a Friday
	for _, tt := range []struct {
		spec Spec
		want string // the next refill after from
	}{
		{Spec{Schedule: "0 9 * * *", Timezone: "Local"}, "2027-03-06T09:00:00Z"},
		{Spec{Schedule: "CRON_TZ=Local 0 9 * * *"}, "2027-03-06T09:00:00Z"},
		{Spec{Schedule: "CRON_TZ= 0 9 * * *"}, "2027-03-06T09:00:00Z"},
		// Odd weekdays, as Temporal fires it: Tuesday the 9th, not Saturday the 7th.
		{Spec{Schedule: "0 0 */2 * 1-5"}, "2027-03-09T00:00:00Z"},
		{Spec{Schedule: "@every 2562047h"}, "2262-04-11T23:00:00Z"},
		{Spec{Schedule: "@hourly", TaskQueue: "mail\tlimits"}, "2027-03-05T13:00:00Z"},
		{Spec{Schedule: "@hourly", Timezone: "Europe/./Paris"}, "2027-03-05T13:00:00Z"},
	} {
		s := tt.spec
		s.Name, s.Amount, s.Maximum = "a", 1, 1
		if err := s.Validate(); err == nil {
			t.Errorf("%+v: Validate accepts it; this case is for specs it refuses", s)
		}
		got, sched, err := readCarried(s)
		if err != nil {
			t.Errorf("readCarried(%+v): %v", s, err)
			continue
		}
		if next := sched.Next(from).Format(time.RFC3339); next != tt.want {
			t.Errorf("readCarried(%+v): next refill %s, want %s", s, next, tt.want)
		}
		if got.Timezone == "Local" || strings.Contains(got.Schedule, "Local") {
			t.Errorf("readCarried(%+v) kept the process zone: %+v", s, got)
		}
	}
	for _, s := range []Spec{
		{Name: "a", Schedule: "nope", Amount: 1, Maximum: 1},
		{Name: "a", Schedule: "@hourly", Amount: 0, Maximum: 1},
		{Name: "a b", Schedule: "@hourly", Amount: 1, Maximum: 1},
		{Name: "a", Schedule: "@hourly", Timezone: "Mars/Olympus", Amount: 1, Maximum: 1},
	} {
		if _, _, err := readCarried(s); err == nil {
			t.Errorf("readCarried(%+v) accepted it", s)
		}
	}
}

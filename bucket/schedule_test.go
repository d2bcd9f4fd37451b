package bucket

import (
	"strings"
	"testing"
	"time"
)

func TestParseScheduleAccepts(t *testing.T) {
	from := time.Date(2026, 11, 26, 17, 33, 20, 500_000_000, time.UTC)
	tests := []struct {
		expr, tz string
		want     []string // the next refills after from, RFC 3339 in UTC
	}{
		{"@every 1s", "", []string{"2026-11-26T17:33:21Z", "2026-11-26T17:33:22Z"}},
		// Aligned to the Unix epoch, not to the moment of parsing.
		{"@every 7s", "", []string{"2026-11-26T17:33:23Z", "2026-11-26T17:33:30Z"}},
		{"@every 1h30m", "", []string{"2026-11-26T18:00:00Z", "2026-11-26T19:30:00Z"}},
		{"*/15 * * * *", "", []string{"2026-11-26T17:45:00Z", "2026-11-26T18:00:00Z"}},
		{"0 * * * *", "", []string{"2026-11-26T18:00:00Z", "2026-11-26T19:00:00Z"}},
		{"@hourly", "", []string{"2026-11-26T18:00:00Z", "2026-11-26T19:00:00Z"}},
		{"@daily", "", []string{"2026-11-27T00:00:00Z", "2026-11-28T00:00:00Z"}},
		{"@midnight", "Europe/Paris", []string{"2026-11-26T23:00:00Z", "2026-11-27T23:00:00Z"}},
		{"CRON_TZ=America/New_York 0 9 * * MON-FRI", "", []string{"2026-11-27T14:00:00Z", "2026-11-30T14:00:00Z"}},
		{"TZ=Asia/Tokyo 30 8 1 * *", "Asia/Tokyo", []string{"2026-11-30T23:30:00Z", "2026-12-31T23:30:00Z"}},
		{"0 0 1 1 *", "", []string{"2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"}},
		{"@weekly", "", []string{"2026-11-29T00:00:00Z", "2026-12-06T00:00:00Z"}},
		{"  5 4 * * sun  ", "", []string{"2026-11-29T04:05:00Z", "2026-12-06T04:05:00Z"}},
		// One day field unrestricted (*, */1 or a list holding *): both readers AND the two.
		{"0 0 */2 * *", "", []string{"2026-11-27T00:00:00Z", "2026-11-29T00:00:00Z"}},
		{"0 0 */1 * 1-5", "", []string{"2026-11-27T00:00:00Z", "2026-11-30T00:00:00Z"}},
		{"0 0 *,15 * MON", "", []string{"2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z"}},
		{"0 0 */2 * */1", "", []string{"2026-11-27T00:00:00Z", "2026-11-29T00:00:00Z"}},
		// The longest interval tb accepts, and a year.
		{"@every 8784h", "", []string{"2027-02-13T00:00:00Z", "2028-02-14T00:00:00Z"}},
		{"@every 8760h", "", []string{"2026-12-18T00:00:00Z", "2027-12-18T00:00:00Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			s, err := ParseSchedule(tt.expr, tt.tz)
			if err != nil {
				t.Fatalf("ParseSchedule(%q, %q): %v", tt.expr, tt.tz, err)
			}
			at := from
			for i, want := range tt.want {
				at = s.Next(at)
				if got := at.Format(time.RFC3339); got != want {
					t.Errorf("refill %d: got %s, want %s", i+1, got, want)
				}
			}
		})
	}
}

func TestParseScheduleRejects(t *testing.T) {
	tests := []struct {
		expr, tz string
		want     string // a part of the message
	}{
		{"", "", "is required"},
		{"0 * * * * *", "", "Temporal reads a 6th field as the YEAR"},
		{"0 0 * * * * 2027", "", "has 7 fields"},
		{"* * *", "", "want 5"},
		{"@every 500ms", "", "refuse intervals under 1s"},
		{"@every 1500ms", "", "whole number of seconds"},
		{"@every", "", "want @every <duration>"},
		{"@every 1d", "", "want @every <duration>"},
		{"@fortnightly", "", "unknown descriptor"},
		{"0 0 1 * MON", "", "restricts both day-of-month and day-of-week"},
		{"0 0 ? * MON", "", "uses ?, which Temporal does not read"},
		{"0 0 L * *", "", `"0 0 L * *"`},
		{"0 0 * * MON#2", "", `"0 0 * * MON#2"`},
		{"60 * * * *", "", "above maximum"},
		{"0 0 30 2 *", "", "never fires"},
		{"0 0 * * 7", "", "above maximum"},
		{"@hourly", "Mars/Olympus", `unknown time zone "Mars/Olympus"`},
		{"CRON_TZ=Europe/Paris @hourly", "Europe/Berlin", "keep one"},
		{"CRON_TZ=Europe/Paris", "", "no schedule after it"},
		{"@hourly", "Local", `"Local" is the time zone of whichever process reads it`},
		{"@hourly", "localtime", `"localtime" is the time zone of whichever process reads it`},
		{"CRON_TZ=Local 0 9 * * *", "", `"Local" is the time zone of whichever process reads it`},
		{"TZ=Local 0 9 * * *", "", `"Local" is the time zone of whichever process reads it`},
		{"CRON_TZ=Local 0 9 * * *", "Local", `"Local" is the time zone of whichever process reads it`},
		{"CRON_TZ= 0 9 * * *", "", "names no time zone after CRON_TZ="},
		{"TZ= @hourly", "", "names no time zone after TZ="},
		{"@every 2562047h", "", "at most 8784h (366 days)"},
		{"@every 8785h", "", "at most 8784h (366 days)"},
		{"@every 9999999999h", "", "want @every <duration>"},
		{"0 0 */2 * 1-5", "", "restricts both day-of-month and day-of-week"},
		{"0 0 1-31 * MON", "", "restricts both day-of-month and day-of-week"},
		{"0 0 */2 * */2", "", "restricts both day-of-month and day-of-week"},
		{"0 0 *-5 * *", "", `"*-5"`},
		{"0 0 * * */3-4", "", `"*/3-4"`},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			_, err := ParseSchedule(tt.expr, tt.tz)
			if err == nil {
				t.Fatalf("ParseSchedule(%q, %q) = nil error, want one containing %q", tt.expr, tt.tz, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseSchedule(%q, %q) = %q, want it to contain %q", tt.expr, tt.tz, err, tt.want)
			}
		})
	}
}

// In a repeated hour Temporal fires once where robfig/cron's own Next fires
// twice; Next follows Temporal.
func TestNextAcrossDaylightSaving(t *testing.T) {
	s, err := ParseSchedule("0 * * * *", "Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// 2027-10-31: 03:00 CEST (01:00Z) becomes 02:00 CET.
	at := time.Date(2027, 10, 30, 23, 30, 0, 0, time.UTC)
	var got []string
	for range 3 {
		at = s.Next(at)
		got = append(got, at.Format(time.RFC3339))
	}
	want := []string{"2027-10-31T00:00:00Z", "2027-10-31T02:00:00Z", "2027-10-31T03:00:00Z"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestScheduleAccessors(t *testing.T) {
	s, err := ParseSchedule("CRON_TZ=Europe/Paris 0 9 * * *", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Cron(), "0 9 * * *"; got != want {
		t.Errorf("Cron() = %q, want %q", got, want)
	}
	if got, want := s.TimeZone(), "Europe/Paris"; got != want {
		t.Errorf("TimeZone() = %q, want %q", got, want)
	}
	if s.Every() != 0 {
		t.Errorf("Every() = %v, want 0", s.Every())
	}
	e, err := ParseSchedule("@every 90s", "")
	if err != nil {
		t.Fatal(err)
	}
	if e.Every() != 90*time.Second || e.Cron() != "" || e.String() != "@every 1m30s" || e.TimeZone() != "UTC" {
		t.Errorf("@every 90s: Every=%v Cron=%q String=%q TimeZone=%q", e.Every(), e.Cron(), e.String(), e.TimeZone())
	}
}

// The zone of the process parsing a schedule must not change its refills:
// the Temporal server, and every worker, may run in a different one.
func TestForecastsIgnoreTheProcessZone(t *testing.T) {
	from := time.Date(2026, 11, 26, 17, 33, 20, 0, time.UTC)
	forecast := func() []string {
		var out []string
		for _, tt := range []struct{ expr, tz string }{
			{"0 9 * * *", ""}, {"0 9 * * *", "UTC"}, {"CRON_TZ=UTC 0 9 * * *", ""},
			{"30 8 * * MON", "Asia/Tokyo"}, {"@daily", ""}, {"@every 90m", ""},
		} {
			s, err := ParseSchedule(tt.expr, tt.tz)
			if err != nil {
				t.Fatalf("ParseSchedule(%q, %q): %v", tt.expr, tt.tz, err)
			}
			out = append(out, tt.expr+" "+tt.tz+" "+s.TimeZone()+" "+s.Next(from).Format(time.RFC3339))
		}
		return out
	}
	t.Setenv("TZ", "UTC")
	saved := time.Local
	t.Cleanup(func() { time.Local = saved })
	time.Local = time.UTC
	inUTC := forecast()

	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TZ", "Asia/Tokyo")
	time.Local = tokyo
	if got := forecast(); strings.Join(got, "\n") != strings.Join(inUTC, "\n") {
		t.Errorf("forecasts moved with the process zone:\n in UTC:   %q\n in Tokyo: %q", inUTC, got)
	}
	if got, want := inUTC[0], "0 9 * * *  UTC 2026-11-27T09:00:00Z"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, tt := range []struct{ expr, tz string }{
		{"0 9 * * *", "Local"}, {"CRON_TZ=Local 0 9 * * *", ""}, {"TZ=Local 0 9 * * *", ""}, {"0 9 * * *", "localtime"},
	} {
		if s, err := ParseSchedule(tt.expr, tt.tz); err == nil {
			t.Errorf("ParseSchedule(%q, %q) accepted the process zone: next %s in %s", tt.expr, tt.tz, s.Next(from).Format(time.RFC3339), s.TimeZone())
		}
	}
}

package bucket

import (
	"fmt"
	"testing"
	"time"
)

func TestTickTogether(t *testing.T) {
	from := time.Date(2026, 11, 26, 21, 10, 30, 0, time.UTC)
	week := from.Add(7 * 24 * time.Hour)
	specs := func(schedules ...string) []Spec {
		var out []Spec
		for i, s := range schedules {
			out = append(out, Spec{Name: fmt.Sprintf("b%d", i), Schedule: s, Amount: 1, Maximum: 1})
		}
		return out
	}
	hourly := make([]string, 40)
	for i := range hourly {
		hourly[i] = "@hourly"
	}
	tests := []struct {
		name      string
		specs     []Spec
		wantAt    time.Time
		wantCount int
	}{
		{"none", nil, time.Time{}, 0},
		{"one", specs("*/5 * * * *"), time.Date(2026, 11, 26, 21, 15, 0, 0, time.UTC), 1},
		{"forty on the hour, one every second", specs(append(hourly, "@every 1s")...), time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC), 41},
		{"every minute meets on the minute", specs("* * * * *", "@every 60s"), time.Date(2026, 11, 26, 21, 11, 0, 0, time.UTC), 2},
		// @every 7s and @every 60s meet every 420 s of Unix time: 21:14:00 is 1795324440.
		{"intervals meet on a common multiple", specs("@every 7s", "@every 60s", "* * * * *"), time.Date(2026, 11, 26, 21, 14, 0, 0, time.UTC), 3},
		{"different minutes never meet", specs("1 * * * *", "2 * * * *", "3 * * * *"), time.Date(2026, 11, 26, 22, 1, 0, 0, time.UTC), 1},
		{"daily at the same time", specs("0 9 * * *", "0 9 * * *"), time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC), 2},
		{"a bad schedule is skipped", specs("0 * * * * *", "@hourly"), time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := TickTogether(tt.specs, from, week, 1440)
			if got.Buckets != tt.wantCount || !got.At.Equal(tt.wantAt) {
				t.Errorf("got %d at %v, want %d at %v", got.Buckets, got.At.UTC(), tt.wantCount, tt.wantAt)
			}
		})
	}

	// Zones: 09:00 in New York and 14:00 UTC are the same instant in winter.
	zoned := []Spec{
		{Name: "ny", Schedule: "0 9 * * *", Timezone: "America/New_York", Amount: 1, Maximum: 1},
		{Name: "utc", Schedule: "0 14 * * *", Amount: 1, Maximum: 1},
	}
	if got := TickTogether(zoned, from, week, 1440); got.Buckets != 2 || !got.At.Equal(time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)) {
		t.Errorf("zoned: got %v", got)
	}
}

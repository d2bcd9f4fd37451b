package e2e_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/server/temporaltest"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/operator"
)

// acceptedSpecs covers each form of the accepted grammar.
var acceptedSpecs = []struct{ expr, tz string }{
	{"@every 1s", ""},
	{"@every 7s", ""},
	{"@every 90s", ""},
	{"@every 1h30m", ""},
	{"@every 25h", ""},
	{"* * * * *", ""},
	{"*/15 * * * *", ""},
	{"5/20 * * * *", ""},
	{"0 * * * *", ""},
	{"30 9 * * MON-FRI", ""},
	{"0 0 1 * *", ""},
	{"0 12 */2 * *", ""},
	{"15 3 * JAN,JUL *", ""},
	{"0 22 * * 0", ""},
	{"0 8-18/2 * * 1-5", ""},
	{"@hourly", ""},
	{"@daily", ""},
	{"@midnight", ""},
	{"@weekly", ""},
	{"@monthly", ""},
	{"@yearly", ""},
	{"@annually", ""},
	{"0 9 * * *", "America/New_York"},
	{"CRON_TZ=Asia/Kolkata 45 6 * * *", ""},
	{"@daily", "Australia/Adelaide"},
	// Daylight-saving transitions: a time in the skipped hour and one in the repeated hour.
	{"30 2 * * *", "America/New_York"},
	{"30 1 * * *", "America/New_York"},
	{"0 * * * *", "Europe/Berlin"},
	{"30 2 * * *", "Europe/Berlin"},
	{"*/20 1-3 * * *", "Europe/London"},
	{"0 0 29 2 *", ""},
	// Long intervals, up to the longest tb accepts.
	{"@every 8760h", ""},
	{"@every 8784h", ""},
	// One day field unrestricted (*, */1, or a list holding *): robfig/cron and
	// Temporal both fire on days matching both fields.
	{"0 0 */1 * 1-5", ""},
	{"0 0 *,15 * MON", ""},
	{"0 6 */2 * */1", ""},
	{"0 0 */3 * *", "Europe/Paris"},
}

// ambiguousDaySpecs restrict both day fields, with a step, a range or a list.
// Temporal fires on days matching both; robfig/cron on days matching either.
// tb refuses them.
var ambiguousDaySpecs = []string{
	"0 0 */2 * 1-5",
	"0 0 1-31 * MON",
	"0 0 1,15 * MON",
	"0 0 */2 * */2",
}

// TestNextRefillsMatchTemporal creates a Temporal Schedule from each accepted
// spec and checks that the refill times tb computes with robfig/cron are the
// ones Temporal fires at: the Schedule's NextActionTimes, and its matching
// times across the coming year's daylight-saving changes.
func TestNextRefillsMatchTemporal(t *testing.T) {
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	c := ts.GetDefaultClient()
	ctx := context.Background()
	t.Run("both day fields", func(t *testing.T) { testAmbiguousDays(t, ts) })
	t.Run("longest intervals", func(t *testing.T) { testLongIntervals(t, ts) })
	// A start in the future makes NextActionTimes independent of when Describe runs.
	startAt := time.Now().UTC().Add(48 * time.Hour).Truncate(time.Hour)
	year := startAt.Year() + 1

	for i, tt := range acceptedSpecs {
		t.Run(tt.expr+" "+tt.tz, func(t *testing.T) {
			s, err := bucket.ParseSchedule(tt.expr, tt.tz)
			if err != nil {
				t.Fatal(err)
			}
			spec := operator.Spec(s)
			spec.StartAt = startAt
			id := fmt.Sprintf("cron-%d", i)
			h, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{
				ID:     id,
				Spec:   spec,
				Action: &client.ScheduleWorkflowAction{ID: id, Workflow: "NeverRuns", TaskQueue: "nobody-polls"},
			})
			if err != nil {
				t.Fatalf("Temporal refused the spec: %v", err)
			}
			desc, err := h.Describe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got := desc.Info.NextActionTimes
			if len(got) == 0 {
				t.Fatal("no NextActionTimes")
			}
			compare(t, "NextActionTimes", s, startAt.Add(-time.Second), got)

			// Every matching time around the coming year's daylight-saving changes
			// in the United States and in Europe. The server lists at most 1000.
			for _, day := range []time.Time{
				time.Date(year, 3, 14, 0, 0, 0, 0, time.UTC),
				time.Date(year, 3, 28, 0, 0, 0, 0, time.UTC),
				time.Date(year, 10, 31, 0, 0, 0, 0, time.UTC),
				time.Date(year, 11, 7, 0, 0, 0, 0, time.UTC),
			} {
				from, to := day.Add(-24*time.Hour), day.Add(24*time.Hour)
				resp, err := c.WorkflowService().ListScheduleMatchingTimes(ctx, &workflowservice.ListScheduleMatchingTimesRequest{
					Namespace:  ts.GetDefaultNamespace(),
					ScheduleId: id,
					StartTime:  timestamppb.New(from),
					EndTime:    timestamppb.New(to),
				})
				if err != nil {
					t.Fatal(err)
				}
				var times []time.Time
				for _, ts := range resp.StartTime {
					times = append(times, ts.AsTime())
				}
				what := "matching times from " + from.Format(time.DateOnly)
				compare(t, what, s, from, times)
				if n := countUntil(s, from, to); len(times) < 1000 && n != len(times) {
					t.Errorf("%s: Temporal lists %d, tb computes %d", what, len(times), n)
				}
			}
		})
	}
}

// compare checks that temporal's times are the successive s.Next after from.
func compare(t *testing.T, what string, s *bucket.Schedule, from time.Time, temporal []time.Time) {
	t.Helper()
	at := from
	for i, want := range temporal {
		at = s.Next(at)
		if !at.Equal(want) {
			t.Errorf("%s[%d]: tb computes %s, Temporal fires at %s", what, i, at.Format(time.RFC3339), want.UTC().Format(time.RFC3339))
			return
		}
	}
}

func countUntil(s *bucket.Schedule, from, end time.Time) int {
	n := 0
	for at := s.Next(from); !at.After(end) && !at.IsZero(); at = s.Next(at) {
		n++
	}
	return n
}

// testAmbiguousDays shows why tb refuses crons restricting both day fields:
// the Schedule fires on days matching both, robfig/cron's own reading on days
// matching either.
func testAmbiguousDays(t *testing.T, ts *temporaltest.TestServer) {
	c := ts.GetDefaultClient()
	ctx := context.Background()
	from := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	end := from.AddDate(0, 2, 0)
	for i, expr := range ambiguousDaySpecs {
		if _, err := bucket.ParseSchedule(expr, ""); err == nil {
			t.Errorf("tb accepts %q", expr)
		}
		id := fmt.Sprintf("days-%d", i)
		if _, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{
			ID:     id,
			Spec:   client.ScheduleSpec{CronExpressions: []string{expr}},
			Action: &client.ScheduleWorkflowAction{ID: id, Workflow: "NeverRuns", TaskQueue: "nobody-polls"},
		}); err != nil {
			t.Fatalf("%q: Temporal refused it: %v", expr, err)
		}
		resp, err := c.WorkflowService().ListScheduleMatchingTimes(ctx, &workflowservice.ListScheduleMatchingTimesRequest{
			Namespace:  ts.GetDefaultNamespace(),
			ScheduleId: id,
			// The start is exclusive and the end inclusive: list the days in [from, end).
			StartTime: timestamppb.New(from.Add(-time.Second)),
			EndTime:   timestamppb.New(end.Add(-time.Second)),
		})
		if err != nil {
			t.Fatal(err)
		}
		var temporal, either, both []string
		for _, at := range resp.StartTime {
			temporal = append(temporal, at.AsTime().UTC().Format(time.DateOnly))
		}
		parsed, err := cron.ParseStandard(expr)
		if err != nil {
			t.Fatal(err)
		}
		spec := parsed.(*cron.SpecSchedule)
		spec.Location = time.UTC
		for at := spec.Next(from.Add(-time.Second)); at.Before(end); at = spec.Next(at) {
			either = append(either, at.Format(time.DateOnly))
		}
		for day := from; day.Before(end); day = day.AddDate(0, 0, 1) {
			if spec.Dom&(1<<day.Day()) != 0 && spec.Dow&(1<<day.Weekday()) != 0 {
				both = append(both, day.Format(time.DateOnly))
			}
		}
		if fmt.Sprint(temporal) != fmt.Sprint(both) {
			t.Errorf("%q: Temporal fires on %v; want the days matching both fields, %v", expr, temporal, both)
		}
		if fmt.Sprint(either) == fmt.Sprint(temporal) {
			t.Errorf("%q: robfig/cron and Temporal agree (%v): tb need not refuse it", expr, temporal)
		}
	}
}

// testLongIntervals shows where tb's bound on @every comes from: Temporal
// accepts any interval, fires one at multiples of it since 1970 and never
// after 2100, so a century fires once (in 2070) and an interval near the
// largest Go duration never; the longest interval tb accepts keeps firing
// (its times are checked against tb's in TestNextRefillsMatchTemporal).
func testLongIntervals(t *testing.T, ts *temporaltest.TestServer) {
	c := ts.GetDefaultClient()
	ctx := context.Background()
	for _, tt := range []struct {
		id    string
		every time.Duration
		fires []string // Temporal's next action times, as years; nil: several
	}{
		{"every-max", bucket.MaxEvery, nil},
		{"every-century", 100 * 8766 * time.Hour, []string{"2070"}},
		{"every-2562047h", 2562047 * time.Hour, []string{}},
	} {
		h, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{
			ID:     tt.id,
			Spec:   client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: tt.every}}},
			Action: &client.ScheduleWorkflowAction{ID: tt.id, Workflow: "NeverRuns", TaskQueue: "nobody-polls"},
		})
		if err != nil {
			t.Fatalf("@every %v: Temporal refused it: %v", tt.every, err)
		}
		desc, err := h.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		years := []string{}
		for _, at := range desc.Info.NextActionTimes {
			years = append(years, at.UTC().Format("2006"))
		}
		if tt.fires == nil && len(years) < 5 || tt.fires != nil && fmt.Sprint(years) != fmt.Sprint(tt.fires) {
			t.Errorf("@every %v: Temporal's next actions fall in %v; want %v (nil: five or more)", tt.every, years, tt.fires)
		}
		if _, err := bucket.ParseSchedule("@every "+tt.every.String(), ""); (err == nil) != (tt.fires == nil) {
			t.Errorf("@every %v: tb's ParseSchedule error %v; want it accepted only if Temporal keeps firing it", tt.every, err)
		}
	}
}

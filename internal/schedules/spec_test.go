package schedules_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/server/temporaltest"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/internal/schedules"
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
}

// TestNextRefillsMatchTemporal creates a Temporal Schedule from each accepted
// spec and checks that the refill times tb computes with robfig/cron are the
// ones Temporal fires at: the Schedule's NextActionTimes, and its matching
// times across the coming year's daylight-saving changes.
func TestNextRefillsMatchTemporal(t *testing.T) {
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	c := ts.GetDefaultClient()
	ctx := context.Background()
	// A start in the future makes NextActionTimes independent of when Describe runs.
	startAt := time.Now().UTC().Add(48 * time.Hour).Truncate(time.Hour)
	year := startAt.Year() + 1

	for i, tt := range acceptedSpecs {
		t.Run(tt.expr+" "+tt.tz, func(t *testing.T) {
			s, err := bucket.ParseSchedule(tt.expr, tt.tz)
			if err != nil {
				t.Fatal(err)
			}
			spec := schedules.Spec(s)
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

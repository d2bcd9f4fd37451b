package operator

import (
	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/bucket"
)

// Spec returns the Temporal ScheduleSpec that fires at s.Next's instants: the
// spec Apply gives a bucket's refill Schedule.
func Spec(s *bucket.Schedule) client.ScheduleSpec {
	if every := s.Every(); every > 0 {
		return client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}}
	}
	return client.ScheduleSpec{CronExpressions: []string{s.Cron()}, TimeZoneName: s.TimeZone()}
}

// Package schedules makes a namespace's refill Schedules and bucket workflows
// match a buckets.yaml: it creates, updates and removes what tb owns, and
// leaves everything else alone.
package operator

import (
	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/bucket"
)

// Spec returns the Temporal ScheduleSpec that fires at s.Next's instants.
func Spec(s *bucket.Schedule) client.ScheduleSpec {
	if every := s.Every(); every > 0 {
		return client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}}
	}
	return client.ScheduleSpec{CronExpressions: []string{s.Cron()}, TimeZoneName: s.TimeZone()}
}

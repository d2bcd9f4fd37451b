// Package bucket defines token buckets: their specification, the buckets.yaml
// file that declares them, their refill schedules and the token arithmetic, with
// the current time always passed in.
package bucket

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// MaxTokens bounds amount and maximum so that token sums never overflow.
const MaxTokens = 1 << 50

// MaxNameLength bounds a bucket name; it becomes part of workflow and schedule IDs.
const MaxNameLength = 128

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// Spec declares one bucket: every Schedule tick adds Amount tokens, and the
// bucket never holds more than Maximum.
type Spec struct {
	// Name identifies the bucket: letters, digits and '_' only.
	Name string `json:"name"`
	// Schedule is when refills happen; see [Schedule] for the grammar.
	Schedule string `json:"schedule"`
	// Timezone is the IANA zone Schedule is read in; "" means UTC.
	Timezone string `json:"timezone,omitempty"`
	// Amount is the number of tokens each tick adds.
	Amount int64 `json:"amount"`
	// Maximum is the capacity: tokens never exceed it.
	Maximum int64 `json:"maximum"`
	// Initial is the number of tokens a new bucket starts with; nil means Maximum.
	Initial *int64 `json:"initial,omitempty"`
	// TaskQueue is where the bucket's workflows run; "" means tb's default
	// (workflows.TaskQueue, or tb sync-schedules --task-queue).
	TaskQueue string `json:"taskQueue,omitempty"`
}

// InitialTokens returns the tokens a new bucket starts with.
func (s Spec) InitialTokens() int64 {
	if s.Initial != nil {
		return *s.Initial
	}
	return s.Maximum
}

// ParseSchedule parses the spec's schedule in its time zone.
func (s Spec) ParseSchedule() (*Schedule, error) { return ParseSchedule(s.Schedule, s.Timezone) }

// Validate checks every field and returns a *ValidationError listing each
// problem, or nil.
func (s Spec) Validate() error {
	var errs ValidationError
	add := func(field string, err error) {
		errs = append(errs, &FieldError{Bucket: s.Name, Field: field, Err: err})
	}
	if err := CheckName(s.Name); err != nil {
		add("name", err)
	}
	if _, err := s.ParseSchedule(); err != nil {
		field := "schedule"
		if s.Timezone != "" && errors.Is(err, errUnknownZone) {
			field = "timezone"
		}
		add(field, err)
	}
	if err := checkCount(s.Amount); err != nil {
		add("amount", err)
	}
	if err := checkCount(s.Maximum); err != nil {
		add("maximum", err)
	}
	if s.Initial != nil {
		switch i := *s.Initial; {
		case i < 0:
			add("initial", fmt.Errorf("must not be negative, got %d", i))
		case s.Maximum > 0 && i > s.Maximum:
			add("initial", fmt.Errorf("%d is more than maximum (%d)", i, s.Maximum))
		}
	}
	if s.TaskQueue != "" && strings.TrimSpace(s.TaskQueue) != s.TaskQueue {
		add("task_queue", fmt.Errorf("%q has leading or trailing spaces", s.TaskQueue))
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// CheckName reports whether name can name a bucket: it becomes part of
// workflow and Schedule IDs.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("is required")
	case len(name) > MaxNameLength:
		return fmt.Errorf("is longer than %d characters", MaxNameLength)
	case !nameRE.MatchString(name):
		return fmt.Errorf("%q may hold only letters, digits and '_'", name)
	}
	return nil
}

func checkCount(n int64) error {
	switch {
	case n <= 0:
		return fmt.Errorf("must be greater than 0, got %d", n)
	case n > MaxTokens:
		return fmt.Errorf("must be at most %d, got %d", int64(MaxTokens), n)
	}
	return nil
}

// CheckCost reports whether cost is a valid request against a bucket of the given maximum.
func CheckCost(cost, maximum int64) error {
	switch {
	case cost <= 0:
		return fmt.Errorf("cost must be greater than 0, got %d", cost)
	case cost > maximum:
		return fmt.Errorf("cost %d is more than the bucket's maximum (%d), so it could never be granted", cost, maximum)
	}
	return nil
}

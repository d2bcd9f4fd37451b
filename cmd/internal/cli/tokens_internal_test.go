package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

// An error row keeps the table's columns: every row's cells start where the
// header's do, whatever rows come before or after it.
func TestTokensTableKeepsColumns(t *testing.T) {
	now := time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC)
	ok := func(name string, tokens int64) bucketStatus {
		return bucketStatus{Bucket: name, State: &workflows.Status{
			Spec:       bucket.Spec{Name: name, Schedule: "@hourly", Amount: 1000, Maximum: 1000},
			State:      bucket.State{Tokens: tokens, Granted: 12345},
			NextRefill: now.Add(30 * time.Minute),
		}}
	}
	rows := []bucketStatus{
		ok("github_api", 1000),
		{Bucket: "gone", Error: "not running (run tb sync-schedules)"},
		ok("a_much_longer_bucket_name", 7),
		{Bucket: "x", Error: "no answer: is a tb worker running?"},
		ok("geocoder", 50),
	}
	var out bytes.Buffer
	if err := printTokens(&out, rows, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != len(rows)+1 {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(rows)+1, out.String())
	}
	cell := regexp.MustCompile(`\S+(?: \S+)*`)
	starts := func(line string) []int {
		var s []int
		for _, m := range cell.FindAllStringIndex(line, -1) {
			s = append(s, m[0])
		}
		return s
	}
	header := starts(lines[0])
	if len(header) != 12 {
		t.Fatalf("header has %d columns: %q", len(header), lines[0])
	}
	for i, line := range lines[1:] {
		if got := starts(line); fmt.Sprint(got) != fmt.Sprint(header) {
			t.Errorf("row %d starts its cells at %v, the header at %v:\n%s", i, got, header, out.String())
		}
	}
	for _, r := range rows {
		if r.Error != "" && !strings.Contains(out.String(), r.Error) {
			t.Errorf("the table lost the error %q:\n%s", r.Error, out.String())
		}
	}
}

// Each error of operator.State is rendered as the row's reason: a bucket not
// running says how it ended and when, one with no worker says what to check,
// and any other error is shown without the bucket name the row already holds.
func TestStateErrorRows(t *testing.T) {
	closed := time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&operator.NotRunningError{Bucket: "a"}, "not running (run tb sync-schedules)"},
		{&operator.NotRunningError{Bucket: "a", Status: enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, Closed: closed},
			"not running: retired (completed at 2026-11-26T17:00:00Z)"},
		{&operator.NotRunningError{Bucket: "a", Status: enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED, Closed: closed},
			"not running: terminated at 2026-11-26T17:00:00Z (run tb sync-schedules)"},
		{&operator.NotRunningError{Bucket: "a", Status: enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT},
			"not running: timed out (run tb sync-schedules)"},
		{&operator.NoAnswerError{Bucket: "a", Err: context.DeadlineExceeded}, "no answer: is a tb worker running?"},
		{fmt.Errorf("listing: %w", &operator.NoAnswerError{Bucket: "a"}), "no answer: is a tb worker running?"},
		{fmt.Errorf("bucket %q: %w", "a", errors.New("boom")), "boom"},
		{errors.New("boom"), "boom"},
	} {
		if got := describeStateError("a", tt.err); got != tt.want {
			t.Errorf("describeStateError(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

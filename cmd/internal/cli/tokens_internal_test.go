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

	"go.temporal.io/api/serviceerror"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbucket/tb/bucket"
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
	if len(header) != 8 {
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

// A query that times out says what to check, whether the deadline is the
// context's or one the server or gRPC reported.
func TestQueryErrorNamesTheMissingWorker(t *testing.T) {
	const hint = "no answer: is a tb worker running?"
	for _, err := range []error{
		context.DeadlineExceeded,
		fmt.Errorf("querying: %w", context.DeadlineExceeded),
		serviceerror.NewDeadlineExceeded("context deadline exceeded"),
		fmt.Errorf("wrapped: %w", serviceerror.NewDeadlineExceeded("context deadline exceeded")),
		status.Error(codes.DeadlineExceeded, "context deadline exceeded"),
	} {
		if got := describeQueryError(err); got != hint {
			t.Errorf("describeQueryError(%T %v) = %q, want %q", err, err, got, hint)
		}
	}
	if got := describeQueryError(serviceerror.NewNotFound("workflow not found")); got != "not running (run tb sync-schedules)" {
		t.Errorf("NotFound: %q", got)
	}
	if got := describeQueryError(errors.New("boom")); got != "boom" {
		t.Errorf("other errors are shown as they are: %q", got)
	}
}

package activities

import (
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/tokenbucket/tb/bucket"
)

func TestDemoAPIQuotaResetsOnTheTick(t *testing.T) {
	tests := []struct {
		schedule string
		start    time.Time
		window   time.Duration
	}{
		{"@every 1s", time.Date(2026, 11, 26, 12, 0, 0, 300_000_000, time.UTC), 700 * time.Millisecond},
		{"@hourly", time.Date(2026, 11, 26, 12, 59, 0, 0, time.UTC), time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.schedule, func(t *testing.T) {
			api, err := NewDemoAPI(bucket.Spec{Name: "d", Schedule: tt.schedule, Amount: 3, Maximum: 3}, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []bool
			for _, at := range []time.Duration{0, 1, 2, 3, tt.window - 1, tt.window, tt.window + 1} {
				ok, _ := api.admit(tt.start.Add(at))
				got = append(got, ok)
			}
			want := []bool{true, true, true, false, false, true, true}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("call %d admitted = %v, want %v (all: %v)", i, got[i], want[i], got)
				}
			}
			if ok, over := api.Counts(); ok != 5 || over != 2 {
				t.Errorf("counts %d ok, %d over; want 5 and 2", ok, over)
			}
		})
	}
}

// The API's answer when the quota is spent: 429 with headers saying when it resets.
func TestDemoAPIAnswers429WithHeaders(t *testing.T) {
	api, err := NewDemoAPI(bucket.Spec{Name: "d", Schedule: "@every 1h", Amount: 3, Maximum: 3}, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	first, second := httptest.NewRecorder(), httptest.NewRecorder()
	api.ServeHTTP(first, nil)
	api.ServeHTTP(second, nil)
	if first.Code != 200 || second.Code != 429 {
		t.Fatalf("answers %d and %d; want 200, then 429: the API is stricter (1) than the bucket (3)", first.Code, second.Code)
	}
	secs, err := strconv.Atoi(second.Header().Get("Retry-After"))
	if err != nil || secs <= 0 || secs > 3600 || second.Header().Get("RateLimit-Remaining") != "0" {
		t.Errorf("429 headers: %v", second.Header())
	}
}

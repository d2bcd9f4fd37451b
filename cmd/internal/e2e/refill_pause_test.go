package e2e_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/workflows"
)

// TestPausedScheduleStopsRefills: pausing a bucket's refill Schedule (as the
// Web UI does) stops its refills — after at most the refill already started
// and the one tick it authorized — and unpausing starts them again.
func TestPausedScheduleStopsRefills(t *testing.T) {
	s := testserver.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := bucket.Spec{Name: "paused", Schedule: "@every 1s", Amount: 1, Maximum: 1000, Initial: new(int64(0))}
	s.Sync(t, spec)
	tokens := func() int64 {
		t.Helper()
		st, err := s.State(ctx, spec.Name)
		if err != nil {
			t.Fatal(err)
		}
		return st.Tokens
	}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		n := tokens()
		return n >= 3, fmt.Sprintf("%d tokens; want refills flowing", n)
	})
	h := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(spec.Name))
	if err := h.Pause(ctx, client.SchedulePauseOptions{Note: "paused by the test"}); err != nil {
		t.Fatal(err)
	}
	atPause := tokens()
	if st, err := s.State(ctx, spec.Name); err == nil {
		t.Logf("at the pause: last tick %v, authorized until %v, refill lag %v", st.LastTick, st.Until, st.RefillLag)
	}
	// Watch the bucket for 7 s: at most the refill started before the pause
	// and the tick it authorized may still arrive, within the first 3 s.
	var settled int64
	for start := time.Now(); time.Since(start) < 7*time.Second; {
		n := tokens()
		if time.Since(start) < 3*time.Second {
			settled = n
		} else if n != settled {
			t.Fatalf("the paused bucket went from %d to %d tokens, %v after the pause", settled, n, time.Since(start).Round(time.Millisecond))
		}
		if n > atPause+2 {
			t.Fatalf("%d tokens at the pause, %d %v later: more than the refill in flight and the tick it authorized", atPause, n, time.Since(start).Round(time.Millisecond))
		}
		<-time.After(100 * time.Millisecond) // the polling interval
	}
	t.Logf("%d tokens at the pause, %d after", atPause, settled)
	if err := h.Unpause(ctx, client.ScheduleUnpauseOptions{Note: "resumed by the test"}); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		n := tokens()
		return n >= settled+2, fmt.Sprintf("%d tokens after unpausing, want refills again (from %d)", n, settled)
	})
}

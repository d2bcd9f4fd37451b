package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
)

// TestGracefulStopLosesNoLeasedToken: a process holding a lease closes its
// Acquirer; the bucket gets back every token the process did not hand out.
func TestGracefulStopLosesNoLeasedToken(t *testing.T) {
	s := testserver.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := bucket.Spec{Name: "leased", Schedule: "@yearly", Amount: 1000, Maximum: 1000}
	s.Sync(t, spec)
	acq, err := interceptor.NewAcquirer(s.NewClient(), interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace(), Lease: 50})
	if err != nil {
		t.Fatal(err)
	}
	const served = 11
	for i := range served {
		if d, err := acq.Acquire(ctx, spec.Name, fmt.Sprint("r", i), 1); err != nil || !d.Granted {
			t.Fatalf("acquire %d: %+v, %v", i, d, err)
		}
	}
	lent, err := s.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if lent.Tokens != 1000-1-50 || len(lent.Leases) != 1 {
		t.Fatalf("before the stop: %d tokens, %d leases; want 949 and one lease of 50", lent.Tokens, len(lent.Leases))
	}
	if err := acq.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := acq.Acquire(ctx, spec.Name, "after", 1); !errors.Is(err, interceptor.ErrClosed) {
		t.Errorf("acquire after Close: %v, want ErrClosed", err)
	}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		st, err := s.State(ctx, spec.Name)
		return err == nil && st.Tokens == 1000-served && st.Granted == served,
			fmt.Sprintf("%d tokens, %d granted (%v); want %d and %d: every token not handed out given back", st.Tokens, st.Granted, err, 1000-served, served)
	})
}

package cli_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbucket/tb/cmd/internal/cli"
)

// silentListener accepts TCP connections and never says a word, like a
// firewall or a proxy that swallows gRPC.
func silentListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c) // read, never answer
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// --connect-timeout bounds the whole dial, including the SDK's first call,
// which on its own gives up after 5 s.
func TestConnectTimeoutIsHonoured(t *testing.T) {
	addr := silentListener(t)
	timeouts := []time.Duration{2 * time.Second, 7 * time.Second}
	took := make([]time.Duration, len(timeouts))
	results := make([]result, len(timeouts))
	var wg sync.WaitGroup
	for i, timeout := range timeouts {
		wg.Go(func() {
			start := time.Now()
			results[i] = tb(t, context.Background(), nil, "tokens", "a", "--address", addr, "--connect-timeout", timeout.String())
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	for i, timeout := range timeouts {
		r := results[i]
		t.Logf("--connect-timeout %v: failed after %v: %s", timeout, took[i].Round(time.Millisecond), strings.TrimSpace(r.err))
		if r.code != cli.ExitFailure || !strings.HasPrefix(r.err, "tb: cannot reach Temporal at "+addr) {
			t.Errorf("--connect-timeout %v: exit %d, stderr %q", timeout, r.code, r.err)
		}
		if took[i] < timeout-100*time.Millisecond || took[i] > timeout+2*time.Second {
			t.Errorf("--connect-timeout %v: failed after %v", timeout, took[i])
		}
	}
	for _, bad := range []string{"0s", "-1s"} {
		r := tb(t, context.Background(), nil, "tokens", "a", "--address", addr, "--connect-timeout", bad)
		if r.code != cli.ExitUsage || !strings.Contains(r.err, "--connect-timeout must be positive") {
			t.Errorf("--connect-timeout %s: exit %d, stderr %q", bad, r.code, r.err)
		}
	}
}

package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbucket/tb/cmd/internal/cli"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestDev starts tb dev with the demo, reads a bucket through another tb
// command as a separate program would, and stops it by cancelling.
func TestDev(t *testing.T) {
	addr := freeAddress(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Main(ctx, cli.IO{Out: &out, Err: &errOut, Env: env{}},
			[]string{"dev", "--demo", "--ephemeral", "--headless", "--address", addr, "-c", "../../../buckets.yaml", "--interval", "200ms"})
	}()

	testserver.Eventually(t, time.Minute, func() (bool, string) {
		select {
		case code := <-done:
			t.Fatalf("tb dev exited with %d: %s", code, errOut.String())
		default:
		}
		r := tb(t, ctx, nil, "tokens", "demo_api", "--address", addr, "-c", "../../../buckets.yaml")
		return r.code == 0 && strings.Contains(r.out, "demo_api"), fmt.Sprintf("tb tokens: %+v", r)
	})
	// The demo's jobs get through: the live table counts answered calls.
	answered := regexp.MustCompile(`: ([1-9]\d*) calls answered`)
	testserver.Eventually(t, time.Minute, func() (bool, string) {
		return answered.MatchString(out.String()), "no answered calls yet:\n" + out.String()
	})
	if !strings.Contains(out.String(), "Temporal server at "+addr+", namespace default, state in memory") {
		t.Errorf("banner: %s", out.String())
	}
	// Its metrics page has the demo's interceptor metrics and the buckets'.
	m := regexp.MustCompile(`Metrics at (http://127\.0\.0\.1:\d+/metrics)\n`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("banner names no metrics page: %s", out.String())
	}
	testserver.Eventually(t, time.Minute, func() (bool, string) {
		families := scrape(t, m[1])
		_, granted := value(families, "tb_acquire_requests_total", "demo_api")
		_, tokens := value(families, "tb_bucket_tokens", "demo_api")
		return granted && tokens, fmt.Sprintf("no tb_acquire_requests_total or tb_bucket_tokens of demo_api at %s", m[1])
	})

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d after cancel; stderr: %s", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tb dev did not stop within 30s of cancel")
	}
	if !strings.HasSuffix(out.String(), "stopping\n") {
		t.Errorf("output does not end with stopping: ...%s", out.String()[max(0, len(out.String())-200):])
	}
}

package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenbucket/tb/cmd/internal/cli"
)

// env is an environment with no TEMPORAL_* variables set unless a test sets them.
type env map[string]string

func (e env) LookupEnv(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e env) Environ() []string {
	var out []string
	for k, v := range e {
		out = append(out, k+"="+v)
	}
	return out
}

type result struct {
	out, err string
	code     int
}

// tb runs the command in-process, as a user would run it in dir.
func tb(t *testing.T, ctx context.Context, e env, args ...string) result {
	t.Helper()
	if e == nil {
		e = env{}
	}
	// No machine-wide Temporal config file: only what the test passes counts.
	if _, ok := e["TEMPORAL_CONFIG_FILE"]; !ok {
		e["TEMPORAL_CONFIG_FILE"] = filepath.Join(t.TempDir(), "none.toml")
	}
	var out, errOut bytes.Buffer
	code := cli.Main(ctx, cli.IO{Out: &out, Err: &errOut, Env: e}, args)
	return result{out.String(), errOut.String(), code}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "buckets.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidate(t *testing.T) {
	ctx := context.Background()
	good := tb(t, ctx, nil, "validate", "--config", "../../../buckets.yaml")
	if good.code != 0 || !strings.Contains(good.out, "4 buckets, 5 guarded activity types: valid") || good.err != "" {
		t.Errorf("valid file: %+v", good)
	}

	// More buckets ticking together than Schedules start in a second: valid, with a warning.
	var many strings.Builder
	many.WriteString("buckets:\n")
	for i := range 31 {
		fmt.Fprintf(&many, "  - {name: b%d, schedule: \"@hourly\", amount: 1, maximum: 1}\n", i)
	}
	crowded := tb(t, ctx, nil, "validate", "-c", writeFile(t, many.String()))
	if crowded.code != 0 || !strings.Contains(crowded.err, "tb: warning: 31 buckets refill in the same second (first at ") ||
		!strings.Contains(crowded.err, "worker.schedulerNamespaceStartWorkflowRPS") || strings.Count(crowded.err, "\n") != 1 {
		t.Errorf("31 hourly buckets: %+v", crowded)
	}

	bad := writeFile(t, "buckets:\n  - name: a\n    schedule: \"0 * * * * *\"\n    amount: 0\n    maximum: 1\n")
	r := tb(t, ctx, nil, "validate", "-c", bad)
	if r.code != cli.ExitFailure {
		t.Errorf("exit code %d, want %d", r.code, cli.ExitFailure)
	}
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], bad+`:3: bucket "a": schedule: `) || lines[1] != bad+`:4: bucket "a": amount: must be greater than 0, got 0` {
		t.Errorf("errors:\n%s", r.out)
	}
	if r.err != "tb: "+bad+": 2 problem(s)\n" {
		t.Errorf("stderr %q", r.err)
	}

	j := tb(t, ctx, nil, "validate", "-c", bad, "-o", "json")
	var parsed struct {
		Valid  bool
		Errors []struct {
			Line   int
			Bucket string
			Field  string
		}
	}
	if err := json.Unmarshal([]byte(j.out), &parsed); err != nil {
		t.Fatalf("json output %q: %v", j.out, err)
	}
	if parsed.Valid || len(parsed.Errors) != 2 || parsed.Errors[1].Line != 4 || parsed.Errors[1].Field != "amount" {
		t.Errorf("json: %+v", parsed)
	}

	missing := tb(t, ctx, nil, "validate", "-c", "nope.yaml")
	if missing.code != cli.ExitFailure || !strings.Contains(missing.err, "nope.yaml: no such file") {
		t.Errorf("missing file: %+v", missing)
	}
}

func TestUsageErrors(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"tokens", "--bogus"},
		{"refill"},
		{"refill", "a", "b"},
		{"validate", "extra"},
		{"-o", "xml", "validate"},
		{"no-such-command"},
		{"refill", "a", "--amount", "-3"},
		{"tokens", "--interval", "0s", "--address", "127.0.0.1:1"},
		{"sync-schedules", "--task-queue", "tb ", "--address", "127.0.0.1:1"},
		{"worker", "--task-queue", "/_sys/tb", "--address", "127.0.0.1:1"},
	} {
		r := tb(t, ctx, nil, args...)
		if r.code != cli.ExitUsage {
			t.Errorf("tb %v: exit %d, want %d (stderr %q)", args, r.code, cli.ExitUsage, r.err)
		}
		if !strings.HasPrefix(r.err, "tb: ") || strings.Count(r.err, "\n") != 1 {
			t.Errorf("tb %v: want a one-line error, got %q", args, r.err)
		}
	}
}

func TestUnreachableTemporal(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	for _, args := range [][]string{
		{"tokens", "--address", "127.0.0.1:1"},
		{"sync-schedules", "-c", "../../../buckets.yaml", "--address", "127.0.0.1:1"},
		{"refill", "a", "--address", "127.0.0.1:1"},
	} {
		r := tb(t, ctx, nil, append(args, "--connect-timeout", "3s")...)
		if r.code != cli.ExitFailure || !strings.HasPrefix(r.err, "tb: cannot reach Temporal at 127.0.0.1:1 (namespace default)") || strings.Count(r.err, "\n") != 1 {
			t.Errorf("tb %v: exit %d, stderr %q", args, r.code, r.err)
		}
	}
	// The address can come from the environment, as with the temporal CLI.
	r := tb(t, ctx, env{"TEMPORAL_ADDRESS": "127.0.0.1:1", "TEMPORAL_NAMESPACE": "prod"}, "tokens", "--connect-timeout", "3s")
	if !strings.Contains(r.err, "cannot reach Temporal at 127.0.0.1:1 (namespace prod)") {
		t.Errorf("from the environment: %q", r.err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("failing took %v", d)
	}
}

func TestVersion(t *testing.T) {
	r := tb(t, context.Background(), nil, "version")
	lines := strings.Split(strings.TrimSuffix(r.out, "\n"), "\n")
	if r.code != cli.ExitOK || len(lines) != 5 || !strings.HasPrefix(lines[0], "tb ") || !strings.HasPrefix(lines[2], "sdk go.temporal.io/sdk ") || !strings.HasPrefix(lines[4], "go1.") {
		t.Errorf("tb version: exit %d, %q", r.code, r.out)
	}
}

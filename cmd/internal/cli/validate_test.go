package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/cli"
)

// tb validate refuses, with the file and line, what tb would otherwise lose
// or read differently from Temporal.
func TestValidateNamesWhatWouldBeLost(t *testing.T) {
	ctx := context.Background()
	const a = "buckets:\n  - name: a\n    schedule: \"@hourly\"\n    amount: 1\n    maximum: 1\n"
	for _, tt := range []struct{ name, content, want string }{
		{"second document", a + "---\nbuckets:\n  - name: b\n", ":6: the file holds a second YAML document (---)"},
		{"Local", a + "    timezone: Local\n", `:6: bucket "a": timezone: "Local" is the time zone of whichever process reads it`},
		{"task queue", a + "    task_queue: \"/_sys/a\"\n", `:6: bucket "a": task_queue: "/_sys/a" starts with "/_sys/"`},
		{"interval", strings.Replace(a, "@hourly", "@every 2562047h", 1), `:3: bucket "a": schedule: "@every 2562047h": the interval may be at most 8784h`},
		{"both day fields", strings.Replace(a, "@hourly", "0 0 */2 * 1-5", 1), `:3: bucket "a": schedule: "0 0 */2 * 1-5" restricts both day-of-month and day-of-week`},
	} {
		path := writeFile(t, tt.content)
		r := tb(t, ctx, nil, "validate", "-c", path)
		if r.code != cli.ExitFailure || !strings.HasPrefix(r.out, path+tt.want) || r.err != "tb: "+path+": 1 problem(s)\n" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %q", tt.name, r.code, r.out, r.err, path+tt.want)
		}
	}

	huge := filepath.Join(t.TempDir(), "huge.yaml")
	if err := os.WriteFile(huge, []byte(a+strings.Repeat("#", bucket.MaxFileSize)), 0o644); err != nil {
		t.Fatal(err)
	}
	r := tb(t, ctx, nil, "validate", "-c", huge)
	if r.code != cli.ExitFailure || r.out != huge+": is larger than 4 MiB, the most tb reads from a buckets file\n" {
		t.Errorf("a file over the cap: exit %d, stdout %q, stderr %q", r.code, r.out, r.err)
	}
}

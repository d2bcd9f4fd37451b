package bucket

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	const doc = `
buckets:
  - name: github_api
    schedule: "@every 1s"
    amount: 5
    maximum: 10
    initial: 0
    task_queue: api-limits
    activities:
      FetchRepo:
      SearchCode: 3
  - name: mailer
    schedule: "0 * * * *"
    timezone: Europe/Paris
    amount: 1_000
    maximum: 1000
    mode: shadow
  - name: per_customer
    schedule: "@every 1m"
    amount: 100
    maximum: 100
    keyed: true
    shards: 16
    activities:
      SearchCode: 2
`
	cfg, err := Parse("buckets.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	want := []Spec{
		{Name: "github_api", Schedule: "@every 1s", Amount: 5, Maximum: 10, Initial: &zero, TaskQueue: "api-limits"},
		{Name: "mailer", Schedule: "0 * * * *", Timezone: "Europe/Paris", Amount: 1000, Maximum: 1000, Mode: ModeShadow},
		{Name: "per_customer", Schedule: "@every 1m", Amount: 100, Maximum: 100, Keyed: true, Shards: 16},
	}
	if !reflect.DeepEqual(cfg.Buckets, want) {
		t.Errorf("Buckets = %+v, want %+v", cfg.Buckets, want)
	}
	wantGuards := map[string][]Guard{
		"FetchRepo":  {{Bucket: "github_api", Cost: 1}},
		"SearchCode": {{Bucket: "github_api", Cost: 3}, {Bucket: "per_customer", Cost: 2, Shards: 16}},
	}
	if !reflect.DeepEqual(cfg.Guards, wantGuards) {
		t.Errorf("Guards = %v, want %v", cfg.Guards, wantGuards)
	}
	if s, ok := cfg.Bucket("mailer"); !ok || s.InitialTokens() != 1000 {
		t.Errorf("Bucket(mailer) = %+v, %v; want initial tokens 1000", s, ok)
	}
	if _, ok := cfg.Bucket("nope"); ok {
		t.Error("Bucket(nope) found a bucket")
	}
}

func TestParseConfigErrors(t *testing.T) {
	const valid = "    schedule: \"@hourly\"\n    amount: 1\n    maximum: 1\n"
	tests := []struct {
		name string
		doc  string
		want []string // each error message, in order
	}{
		{"empty file", "", []string{
			`b.yaml: buckets: is required: the file declares no buckets`}},
		{"syntax", "buckets:\n  - name: a\n    schedule: \"@hourly\n", []string{
			`b.yaml:3: found unexpected end of stream`}},
		{"control character", "buckets:\n  - name: a\x01\n", []string{
			`b.yaml:2: control characters are not allowed`}},
		{"not a mapping", "- a\n", []string{
			`b.yaml:1: the file must be a mapping with a buckets list`}},
		{"unknown top-level field", "bucket: []\n", []string{
			`b.yaml:1: bucket: is not a known field; the file holds a buckets list`,
			`b.yaml:1: buckets: is required`}},
		{"buckets not a list", "buckets: {a: 1}\n", []string{
			`b.yaml:1: buckets: must be a list of buckets`}},
		{"bucket not a mapping", "buckets:\n  - just_a_name\n", []string{
			`b.yaml:2: buckets[0]: must be a mapping with name, schedule, amount and maximum`}},
		{"missing fields", "buckets:\n  - name: a\n", []string{
			`b.yaml:2: bucket "a": schedule: is required`,
			`b.yaml:2: bucket "a": amount: is required`,
			`b.yaml:2: bucket "a": maximum: is required`}},
		{"missing name", "buckets:\n  - schedule: \"@hourly\"\n    amount: 1\n    maximum: 1\n", []string{
			`b.yaml:2: bucket "buckets[0]": name: is required`}},
		{"unknown field", "buckets:\n  - name: a\n" + valid + "    burst: 5\n", []string{
			`b.yaml:6: bucket "a": burst: is not a known field; a bucket has name, schedule, timezone, amount, maximum, initial, keyed, shards, mode, task_queue and activities`}},
		{"bad mode", "buckets:\n  - name: a\n" + valid + "    mode: dry-run\n", []string{
			`b.yaml:6: bucket "a": mode: "dry-run" is not a mode; use "enforce" (the default) or "shadow"`}},
		{"keyed not a bool", "buckets:\n  - name: a\n" + valid + "    keyed: yes please\n", []string{
			`b.yaml:6: bucket "a": keyed: must be true or false, got "yes please"`}},
		{"shards without keyed", "buckets:\n  - name: a\n" + valid + "    shards: 4\n", []string{
			`b.yaml:6: bucket "a": shards: only a keyed bucket has shards; set keyed: true`}},
		{"zero shards", "buckets:\n  - name: a\n" + valid + "    keyed: true\n    shards: 0\n", []string{
			`b.yaml:7: bucket "a": shards: must be 1 to 64, got 0`}},
		{"too many shards", "buckets:\n  - name: a\n" + valid + "    keyed: true\n    shards: 1000\n", []string{
			`b.yaml:7: bucket "a": shards: must be 1 to 64, got 1000`}},
		{"bad name", "buckets:\n  - name: a-b/c\n" + valid, []string{
			`b.yaml:2: bucket "a-b/c": name: "a-b/c" may hold only letters, digits and '_'`}},
		{"duplicate name", "buckets:\n  - name: a\n" + valid + "  - name: a\n" + valid, []string{
			`b.yaml:6: bucket "a": name: "a" is declared twice (first at line 2)`}},
		{"duplicate key", "buckets:\n  - name: a\n" + valid + "    amount: 2\n", []string{
			`b.yaml:6: bucket "a": amount: is set twice (first at line 4)`}},
		{"six-field cron", "buckets:\n  - name: a\n    schedule: \"0 * * * * *\"\n    amount: 1\n    maximum: 1\n", []string{
			`b.yaml:3: bucket "a": schedule: "0 * * * * *" has 6 fields: Temporal reads a 6th field as the YEAR and robfig/cron reads a 1st as the SECOND, so tb accepts 5 fields (minute hour day-of-month month day-of-week); use @every <duration> for sub-minute refills`}},
		{"bad timezone", "buckets:\n  - name: a\n" + valid + "    timezone: Mars/Olympus\n", []string{
			`b.yaml:6: bucket "a": timezone: unknown time zone "Mars/Olympus"`}},
		{"zero amount", "buckets:\n  - name: a\n    schedule: \"@hourly\"\n    amount: 0\n    maximum: 1\n", []string{
			`b.yaml:4: bucket "a": amount: must be greater than 0, got 0`}},
		{"negative maximum", "buckets:\n  - name: a\n    schedule: \"@hourly\"\n    amount: 1\n    maximum: -3\n", []string{
			`b.yaml:5: bucket "a": maximum: must be greater than 0, got -3`}},
		{"fractional amount", "buckets:\n  - name: a\n    schedule: \"@hourly\"\n    amount: 2.5\n    maximum: 1\n", []string{
			`b.yaml:4: bucket "a": amount: must be a whole number, got "2.5"`}},
		{"string maximum", "buckets:\n  - name: a\n    schedule: \"@hourly\"\n    amount: 1\n    maximum: lots\n", []string{
			`b.yaml:5: bucket "a": maximum: must be a whole number, got "lots"`}},
		{"huge maximum", "buckets:\n  - name: a\n    schedule: \"@hourly\"\n    amount: 1\n    maximum: 99999999999999999999\n", []string{
			`b.yaml:5: bucket "a": maximum: must be a whole number, got "99999999999999999999"`}},
		{"task queue with spaces", "buckets:\n  - name: a\n" + valid + "    task_queue: \" q\"\n", []string{
			`b.yaml:6: bucket "a": task_queue: " q" has leading or trailing spaces`}},
		{"initial above maximum", "buckets:\n  - name: a\n" + valid + "    initial: 2\n", []string{
			`b.yaml:6: bucket "a": initial: 2 is more than maximum (1)`}},
		{"schedule not a string", "buckets:\n  - name: a\n    schedule: [1]\n    amount: 1\n    maximum: 1\n", []string{
			`b.yaml:3: bucket "a": schedule: must be a string`}},
		{"activities not a mapping", "buckets:\n  - name: a\n" + valid + "    activities: [Fetch]\n", []string{
			`b.yaml:6: bucket "a": activities: must map activity types to their cost, e.g. {FetchRepo: 1}`}},
		{"activity cost too high", "buckets:\n  - name: a\n" + valid + "    activities:\n      Fetch: 2\n", []string{
			`b.yaml:7: bucket "a": activities.Fetch: cost 2 is more than the bucket's maximum (1), so it could never be granted`}},
		{"activity cost zero", "buckets:\n  - name: a\n" + valid + "    activities:\n      Fetch: 0\n", []string{
			`b.yaml:7: bucket "a": activities.Fetch: cost must be greater than 0, got 0`}},
		{"activity in nine buckets", nineBuckets(valid), []string{
			`b.yaml:46: bucket "i": activities.Fetch: is guarded by 9 buckets; the most is 8`}},
		{"task queue reserved for partitions", "buckets:\n  - name: a\n" + valid + "    task_queue: /_sys/a/1\n", []string{
			`b.yaml:6: bucket "a": task_queue: "/_sys/a/1" starts with "/_sys/", which Temporal reserves for task queue partitions`}},
		{"task queue internal to Temporal", "buckets:\n  - name: a\n" + valid + "    task_queue: temporal-sys-per-ns-tq\n", []string{
			`b.yaml:6: bucket "a": task_queue: "temporal-sys-per-ns-tq" starts with "temporal-sys-", which Temporal reserves for its own task queues`}},
		{"task queue with a control character", "buckets:\n  - name: a\n" + valid + "    task_queue: \"mail\\tlimits\"\n", []string{
			`b.yaml:6: bucket "a": task_queue: "mail\tlimits" holds a control character (U+0009) at byte 4`}},
		{"task queue too long", "buckets:\n  - name: a\n" + valid + "    task_queue: " + strings.Repeat("q", 256) + "\n", []string{
			`b.yaml:6: bucket "a": task_queue: is 256 bytes long; at most 255`}},
		{"task queue empty", "buckets:\n  - name: a\n" + valid + "    task_queue: \"\"\n", []string{
			`b.yaml:6: bucket "a": task_queue: is empty; leave it out for the default task queue`}},
		{"schedule too long", "buckets:\n  - name: a\n    schedule: \"" + strings.Repeat("1,", 300) + "1 * * * *\"\n    amount: 1\n    maximum: 1\n", []string{
			`b.yaml:3: bucket "a": schedule: is 609 bytes long; at most 512`}},
		{"timezone too long", "buckets:\n  - name: a\n" + valid + "    timezone: " + strings.Repeat("Z", 65) + "\n", []string{
			`b.yaml:6: bucket "a": timezone: is 65 bytes long; at most 64`}},
		{"timezone Local", "buckets:\n  - name: a\n" + valid + "    timezone: Local\n", []string{
			`b.yaml:6: bucket "a": timezone: "Local" is the time zone of whichever process reads it (each worker, the Temporal server), so they would disagree; name an IANA zone such as Europe/Paris, or UTC`}},
		{"timezone localtime", "buckets:\n  - name: a\n" + valid + "    timezone: localtime\n", []string{
			`b.yaml:6: bucket "a": timezone: "localtime" is the time zone of whichever process reads it (each worker, the Temporal server), so they would disagree; name an IANA zone such as Europe/Paris, or UTC`}},
		{"CRON_TZ=Local", "buckets:\n  - name: a\n    schedule: \"CRON_TZ=Local 0 9 * * *\"\n    amount: 1\n    maximum: 1\n", []string{
			`b.yaml:3: bucket "a": schedule: "Local" is the time zone of whichever process reads it (each worker, the Temporal server), so they would disagree; name an IANA zone such as Europe/Paris, or UTC`}},
		{"CRON_TZ= with no zone", "buckets:\n  - name: a\n    schedule: \"CRON_TZ= 0 9 * * *\"\n    amount: 1\n    maximum: 1\n", []string{
			`b.yaml:3: bucket "a": schedule: "CRON_TZ= 0 9 * * *" names no time zone after CRON_TZ=; write CRON_TZ=UTC or an IANA zone such as CRON_TZ=Europe/Paris`}},
		{"second document", "buckets:\n  - name: a\n" + valid + "---\nbuckets:\n  - name: b\n" + valid, []string{
			`b.yaml:6: the file holds a second YAML document (---); tb reads one: put every bucket in the one buckets list`}},
		{"interval Temporal never fires", "buckets:\n  - name: a\n    schedule: \"@every 2562047h\"\n    amount: 1\n    maximum: 1\n", []string{
			`b.yaml:3: bucket "a": schedule: "@every 2562047h": the interval may be at most 8784h (366 days); Temporal fires an interval at multiples of it since 1970 and never after 2100, so a longer one fires rarely or never`}},
		{"both day fields with a step", "buckets:\n  - name: a\n    schedule: \"0 0 */2 * 1-5\"\n    amount: 1\n    maximum: 1\n", []string{
			`b.yaml:3: bucket "a": schedule: "0 0 */2 * 1-5" restricts both day-of-month and day-of-week (a day field is unrestricted only when it holds * or */1): robfig/cron fires when either matches, Temporal only when both do; make one of them *`}},
		{"several errors", "buckets:\n  - name: a\n    schedule: \"@every 100ms\"\n    amount: 0\n    maximum: 1\n", []string{
			`b.yaml:3: bucket "a": schedule: "@every 100ms": Temporal Schedules refuse intervals under 1s`,
			`b.yaml:4: bucket "a": amount: must be greater than 0, got 0`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("b.yaml", []byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse = %+v, want errors %q", cfg, tt.want)
			}
			var verr ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("Parse error %T is not a ValidationError: %v", err, err)
			}
			var got []string
			for _, fe := range verr {
				got = append(got, fe.Error())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n got  %q\n want %q", got, tt.want)
			}
		})
	}
}

func TestFieldErrorIsReachable(t *testing.T) {
	_, err := Parse("b.yaml", []byte("buckets:\n  - name: a\n    schedule: \"@hourly\"\n    amount: 0\n    maximum: 1\n"))
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("errors.As(%v, *FieldError) = false", err)
	}
	if fe.Bucket != "a" || fe.Field != "amount" || fe.Line != 4 {
		t.Errorf("FieldError = %+v, want bucket a, field amount, line 4", fe)
	}
}

func TestExampleFileIsValid(t *testing.T) {
	cfg, err := Load("../" + DefaultFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Buckets) == 0 || len(cfg.Guards) == 0 {
		t.Errorf("example declares %d buckets and %d guarded activities; want some of each", len(cfg.Buckets), len(cfg.Guards))
	}
}

// A file larger than MaxFileSize is refused before it is parsed, naming the
// file and the cap; one at the cap is read.
func TestLoadRefusesHugeFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int) string {
		t.Helper()
		head := "buckets:\n  - {name: a, schedule: \"@hourly\", amount: 1, maximum: 1}\n"
		data := []byte(head + strings.Repeat("#", size-len(head)-1) + "\n")
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	if _, err := Load(write("at-cap.yaml", MaxFileSize)); err != nil {
		t.Errorf("a file of exactly MaxFileSize bytes: %v", err)
	}
	huge := write("huge.yaml", MaxFileSize+1)
	_, err := Load(huge)
	want := huge + ": is larger than 4 MiB, the most tb reads from a buckets file"
	if err == nil || err.Error() != want {
		t.Errorf("Load(a file over the cap) = %v, want %q", err, want)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.File != huge {
		t.Errorf("Load(a file over the cap): %T %v, want a *FieldError naming the file", err, err)
	}
	if _, err := Parse("b.yaml", make([]byte, MaxFileSize+1)); err == nil || !strings.Contains(err.Error(), "b.yaml: is larger than 4 MiB") {
		t.Errorf("Parse(more than MaxFileSize bytes) = %v", err)
	}
}

// Only the first document was read: a second one's buckets were dropped
// (and sync would have deleted their Schedules).
func TestParseRefusesMoreDocuments(t *testing.T) {
	for _, doc := range []string{
		"buckets: []\n---\nbuckets: [{name: b, schedule: \"@hourly\", amount: 1, maximum: 1}]\n",
		"buckets: []\n---\n",
		"---\nbuckets: []\n---\n# disabled\n",
		"buckets: []\n---\n: : bad\n",
	} {
		_, err := Parse("b.yaml", []byte(doc))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Line == 0 {
			t.Errorf("Parse(%q) = %v, want an error with a line", doc, err)
		}
	}
	for _, doc := range []string{"---\nbuckets: []\n", "buckets: []\n...\n", "buckets: []\n# the end\n"} {
		if _, err := Parse("b.yaml", []byte(doc)); err != nil {
			t.Errorf("Parse(%q) = %v, want one document read", doc, err)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("does-not-exist.yaml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
}

func TestSpecValidateWithoutFile(t *testing.T) {
	err := Spec{Name: "x y", Schedule: "@hourly", Amount: 1, Maximum: 1}.Validate()
	if err == nil || !strings.HasPrefix(err.Error(), `bucket "x y": name: `) {
		t.Errorf("Validate() = %v, want a name error without a file position", err)
	}
}

// nineBuckets declares buckets a … i, each guarding Fetch, one more than MaxGuards.
func nineBuckets(valid string) string {
	var b strings.Builder
	b.WriteString("buckets:\n")
	for _, name := range "abcdefghi" {
		fmt.Fprintf(&b, "  - name: %c\n%s    activities: {Fetch: 1}\n", name, valid)
	}
	return b.String()
}

func TestParseStackedGuards(t *testing.T) {
	cfg, err := Parse("b.yaml", []byte(`buckets:
  - name: per_minute
    schedule: "* * * * *"
    amount: 60
    maximum: 60
    activities: {Complete: 1, Embed: 1}
  - name: per_hour
    schedule: "@hourly"
    amount: 1000
    maximum: 1000
    activities: {Complete: 5}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]Guard{
		"Complete": {{Bucket: "per_hour", Cost: 5}, {Bucket: "per_minute", Cost: 1}}, // in bucket order
		"Embed":    {{Bucket: "per_minute", Cost: 1}},
	}
	if !reflect.DeepEqual(cfg.Guards, want) {
		t.Errorf("guards = %+v, want %+v", cfg.Guards, want)
	}
}

package bucket

import (
	"errors"
	"testing"
)

// FuzzParse: whatever the bytes, Parse does not panic, and returns either a
// config whose every bucket is valid, or errors that each name a field or a line.
// The seed corpus is in testdata/fuzz/FuzzParse; run with
//
//	go test ./bucket -fuzz FuzzParse -fuzztime 5m
func FuzzParse(f *testing.F) {
	f.Add([]byte("buckets:\n  - name: a\n    schedule: \"@every 1s\"\n    amount: 5\n    maximum: 5\n    activities: {A: 2}\n"))
	f.Add([]byte("buckets: [{name: b, schedule: '0 * * * *', amount: 1, maximum: 1, initial: 0, timezone: UTC}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yaml", data)
		if err != nil {
			var verr ValidationError
			if !errors.As(err, &verr) || len(verr) == 0 {
				t.Fatalf("error %T is not a ValidationError: %v", err, err)
			}
			for _, fe := range verr {
				if fe.Field == "" && fe.Line == 0 {
					t.Fatalf("an error names neither a field nor a line: %v", fe)
				}
			}
			return
		}
		names := map[string]bool{}
		for _, s := range cfg.Buckets {
			if err := s.Validate(); err != nil {
				t.Fatalf("Parse accepted an invalid bucket %+v: %v", s, err)
			}
			if _, legacy := UpgradeLegacySpec(s); legacy {
				t.Fatalf("Parse accepted %+v, which UpgradeLegacySpec would change", s)
			}
			if names[s.Name] {
				t.Fatalf("Parse accepted bucket %q twice", s.Name)
			}
			names[s.Name] = true
		}
		for activity, guards := range cfg.Guards {
			if len(guards) == 0 || len(guards) > MaxGuards {
				t.Fatalf("activity %q has %d guards", activity, len(guards))
			}
			for i, g := range guards {
				spec, ok := cfg.Bucket(g.Bucket)
				if !ok || CheckCost(g.Cost, spec.Maximum) != nil {
					t.Fatalf("activity %q guarded by %+v, which cannot be granted", activity, g)
				}
				if i > 0 && guards[i-1].Bucket >= g.Bucket {
					t.Fatalf("activity %q: guards %+v not in bucket order, or one bucket twice", activity, guards)
				}
			}
		}
	})
}

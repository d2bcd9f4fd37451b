// Package bucket defines token buckets: their specification, the buckets.yaml
// file that declares them, their refill schedules and the token arithmetic, with
// the current time always passed in.
package bucket

import (
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxTokens bounds amount and maximum so that token sums never overflow.
const MaxTokens = 1 << 50

// Bounds on the strings a Spec carries, in bytes. A spec travels in the bucket
// workflow's continue-as-new payload, whose size must stay bounded.
const (
	// MaxNameLength bounds a bucket name; it becomes part of workflow and schedule IDs.
	MaxNameLength = 128
	// MaxScheduleLength bounds the schedule text. A cron listing every value of
	// every field once (but one day field, which must stay *), behind a
	// CRON_TZ= prefix with the longest zone name, is 406 bytes.
	MaxScheduleLength = 512
	// MaxTimezoneLength bounds the timezone field: the longest IANA zone name
	// (America/Argentina/ComodRivadavia) is 32 bytes.
	MaxTimezoneLength = 64
	// MaxTaskQueueLength bounds a task queue name. Temporal refuses names over
	// limit.maxIDLength (1000 bytes by default), and its SQL visibility stores
	// keep a workflow's task queue in a VARCHAR(255) column, which is why
	// docker-compose.yml lowers that limit to 255.
	MaxTaskQueueLength = 255
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// Spec declares one bucket: every Schedule tick adds Amount tokens, and the
// bucket never holds more than Maximum.
type Spec struct {
	// Name identifies the bucket: letters, digits and '_' only, at most
	// MaxNameLength bytes.
	Name string `json:"name"`
	// Schedule is when refills happen, at most MaxScheduleLength bytes; see
	// [Schedule] for the grammar.
	Schedule string `json:"schedule"`
	// Timezone is the IANA zone Schedule is read in, at most MaxTimezoneLength
	// bytes; "" means UTC. "Local" is refused: it is the zone of whichever
	// process reads it.
	Timezone string `json:"timezone,omitempty"`
	// Amount is the number of tokens each tick adds.
	Amount int64 `json:"amount"`
	// Maximum is the capacity: tokens never exceed it.
	Maximum int64 `json:"maximum"`
	// Initial is the number of tokens a new bucket starts with; nil means Maximum.
	Initial *int64 `json:"initial,omitempty"`
	// Keyed declares a template: every key (a tenant, a customer's API key)
	// has a bucket of its own, of this spec, kept in Shards shard workflows
	// (default DefaultShards); a key is on shard KeyShard(key, Shards).
	Keyed  bool `json:"keyed,omitempty"`
	Shards int  `json:"shards,omitempty"`
	// Mode is "enforce" (or "", the default) or "shadow": a bucket in shadow
	// mode counts and logs what it would refuse but grants everything, for
	// putting tb in front of a live integration safely.
	Mode string `json:"mode,omitempty"`
	// TaskQueue is where the bucket's workflows run; "" means tb's default
	// (workflows.TaskQueue, or tb sync-schedules --task-queue). See
	// [CheckTaskQueue] for what a name may hold.
	TaskQueue string `json:"taskQueue,omitempty"`
}

// Modes of a bucket.
const (
	ModeEnforce = "enforce"
	ModeShadow  = "shadow"
)

// Shards of a keyed bucket.
const (
	DefaultShards = 8
	MaxShards     = 64
	// MaxKeyLength bounds a key, in bytes: as Temporal bounds a FairnessKey.
	MaxKeyLength = 64
)

// ShardCount returns how many shard workflows hold a keyed bucket's keys, or 0.
func (s Spec) ShardCount() int {
	switch {
	case !s.Keyed:
		return 0
	case s.Shards == 0:
		return DefaultShards
	}
	return s.Shards
}

// KeyShard returns the shard of shards that holds key: the FNV-1a 32-bit
// hash of the key's UTF-8 bytes, modulo shards — a hash any language has.
func KeyShard(key string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(shards))
}

// CheckKey reports whether key can name a key of a keyed bucket.
func CheckKey(key string) error {
	switch {
	case key == "":
		return errors.New("the key is empty")
	case len(key) > MaxKeyLength:
		return fmt.Errorf("the key is %d bytes long; at most %d", len(key), MaxKeyLength)
	case !utf8.ValidString(key):
		return errors.New("the key is not valid UTF-8")
	}
	return nil
}

// Shadow reports whether the bucket is in shadow mode.
func (s Spec) Shadow() bool { return s.Mode == ModeShadow }

// InitialTokens returns the tokens a new bucket starts with.
func (s Spec) InitialTokens() int64 {
	if s.Initial != nil {
		return *s.Initial
	}
	return s.Maximum
}

// ParseSchedule parses the spec's schedule in its time zone.
func (s Spec) ParseSchedule() (*Schedule, error) { return ParseSchedule(s.Schedule, s.Timezone) }

// Validate checks every field and returns a *ValidationError listing each
// problem, or nil.
func (s Spec) Validate() error { return s.validate(true) }

// readCarried reads a spec a bucket workflow carried in its state (across
// continue-as-new, or in its Schedule's action), which an earlier version of
// tb may have written and this one's Validate refuses. It names UTC for a
// Local zone (see UpgradeLegacySpec), and accepts what ran as Temporal fires
// it: crons restricting both day fields (tb always forecast them, like
// Temporal, on days matching both), intervals over MaxEvery, strings over the
// bounds, and task queues this version refuses (the workflow already runs on
// one). Everything else is checked as Validate does. A spec from buckets.yaml
// or a reconfiguration must pass Validate.
func readCarried(s Spec) (Spec, *Schedule, error) {
	s, _ = UpgradeLegacySpec(s)
	if err := s.validate(false); err != nil {
		return Spec{}, nil, err
	}
	sched, err := parseSchedule(s.Schedule, s.Timezone, false)
	if err != nil {
		return Spec{}, nil, err
	}
	return s, sched, nil
}

// validate checks the spec; strict is false for one carried from an earlier
// version of tb (see readCarried).
func (s Spec) validate(strict bool) error {
	var errs ValidationError
	add := func(field string, err error) {
		errs = append(errs, &FieldError{Bucket: s.Name, Field: field, Err: err})
	}
	if err := CheckName(s.Name); err != nil {
		add("name", err)
	}
	switch {
	case strict && len(s.Schedule) > MaxScheduleLength:
		add("schedule", tooLong(s.Schedule, MaxScheduleLength))
	case strict && len(s.Timezone) > MaxTimezoneLength:
		add("timezone", tooLong(s.Timezone, MaxTimezoneLength))
	default:
		if _, err := parseSchedule(s.Schedule, s.Timezone, strict); err != nil {
			field := "schedule"
			var zerr zoneError
			if s.Timezone != "" && errors.As(err, &zerr) {
				field = "timezone"
			}
			add(field, err)
		}
	}
	if err := checkCount(s.Amount); err != nil {
		add("amount", err)
	}
	if err := checkCount(s.Maximum); err != nil {
		add("maximum", err)
	}
	if s.Initial != nil {
		switch i := *s.Initial; {
		case i < 0:
			add("initial", fmt.Errorf("must not be negative, got %d", i))
		case s.Maximum > 0 && i > s.Maximum:
			add("initial", fmt.Errorf("%d is more than maximum (%d)", i, s.Maximum))
		}
	}
	if s.TaskQueue != "" && strict {
		if err := CheckTaskQueue(s.TaskQueue); err != nil {
			add("task_queue", err)
		}
	}
	switch {
	case !s.Keyed && s.Shards != 0:
		add("shards", errors.New("only a keyed bucket has shards; set keyed: true"))
	case s.Keyed && (s.Shards < 0 || s.Shards > MaxShards):
		add("shards", fmt.Errorf("must be 1 to %d, got %d", MaxShards, s.Shards))
	}
	switch s.Mode {
	case "", ModeEnforce, ModeShadow:
	default:
		add("mode", fmt.Errorf("%q is not a mode; use %q (the default) or %q", s.Mode, ModeEnforce, ModeShadow))
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// CheckName reports whether name can name a bucket: it becomes part of
// workflow and Schedule IDs.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("is required")
	case len(name) > MaxNameLength:
		return fmt.Errorf("is longer than %d characters", MaxNameLength)
	case !nameRE.MatchString(name):
		return fmt.Errorf("%q may hold only letters, digits and '_'", name)
	}
	return nil
}

func tooLong(s string, limit int) error {
	return fmt.Errorf("is %d bytes long; at most %d", len(s), limit)
}

// Task queue prefixes Temporal keeps for itself: partitions of a task queue
// are named /_sys/<name>/<n>, and the server's own queues start temporal-sys-
// (it refuses workflows on its per-namespace ones).
const (
	partitionPrefix   = "/_sys/"
	systemQueuePrefix = "temporal-sys-"
)

// CheckTaskQueue reports whether Temporal would run workflows on the named task
// queue: valid UTF-8 (gRPC carries it as a protobuf string), no control
// characters or surrounding spaces (a typo that strands a bucket on a queue no
// worker polls), at most MaxTaskQueueLength bytes, and none of the prefixes
// Temporal reserves.
func CheckTaskQueue(q string) error {
	switch {
	case q == "":
		return errors.New("is empty; leave it out for the default task queue")
	case len(q) > MaxTaskQueueLength:
		return tooLong(q, MaxTaskQueueLength)
	case !utf8.ValidString(q):
		return fmt.Errorf("%q is not valid UTF-8", q)
	}
	for i, r := range q {
		if unicode.IsControl(r) {
			return fmt.Errorf("%q holds a control character (%U) at byte %d", q, r, i)
		}
	}
	switch {
	case strings.TrimSpace(q) != q:
		return fmt.Errorf("%q has leading or trailing spaces", q)
	case strings.HasPrefix(q, partitionPrefix):
		return fmt.Errorf("%q starts with %q, which Temporal reserves for task queue partitions", q, partitionPrefix)
	case strings.HasPrefix(q, systemQueuePrefix):
		return fmt.Errorf("%q starts with %q, which Temporal reserves for its own task queues", q, systemQueuePrefix)
	}
	return nil
}

func checkCount(n int64) error {
	switch {
	case n <= 0:
		return fmt.Errorf("must be greater than 0, got %d", n)
	case n > MaxTokens:
		return fmt.Errorf("must be at most %d, got %d", int64(MaxTokens), n)
	}
	return nil
}

// CheckCost reports whether cost is a valid request against a bucket of the given maximum.
func CheckCost(cost, maximum int64) error {
	switch {
	case cost <= 0:
		return fmt.Errorf("cost must be greater than 0, got %d", cost)
	case cost > maximum:
		return fmt.Errorf("cost %d is more than the bucket's maximum (%d), so it could never be granted", cost, maximum)
	}
	return nil
}

// UpgradeLegacySpec returns s as this version of tb reads a spec that an
// earlier one accepted and this one refuses, and whether it changed anything.
// Earlier versions accepted the time zones "Local" and "localtime" (in the
// timezone field or a CRON_TZ= or TZ= prefix), which each process resolved to
// its own zone while the Schedule, created with that name, fired in the
// Temporal server's (UTC in its images); and an empty "CRON_TZ= " prefix,
// which meant UTC. UpgradeLegacySpec names UTC instead, so the bucket forecasts
// the refills its Schedule makes. A bucket workflow restoring a spec it
// carried across continue-as-new calls it before [Restore]; tb sync-schedules
// then replaces the spec with the corrected buckets.yaml's.
func UpgradeLegacySpec(s Spec) (Spec, bool) {
	changed := false
	if processZone(s.Timezone) {
		s.Timezone, changed = "UTC", true
	}
	if key, zone, rest, ok := cutZonePrefix(strings.TrimSpace(s.Schedule)); ok && rest != "" {
		switch {
		case zone == "":
			s.Schedule, changed = rest, true
		case processZone(zone):
			s.Schedule, changed = key+"=UTC "+rest, true
		}
	}
	return s, changed
}

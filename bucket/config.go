package bucket

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// DefaultFile is the config file tb reads unless told otherwise.
const DefaultFile = "buckets.yaml"

// MaxFileSize is the most Load reads and Parse accepts: 4 MiB. A bucket takes
// about 160 bytes, so that is some 25,000 buckets, far more than one namespace's
// Schedules refill on time; parsing takes about 45 times a file's size in
// memory (a file at the cap peaks near 180 MB), which the cap bounds.
const MaxFileSize = 4 << 20

// Config is a parsed buckets.yaml: the buckets, and which activity types each guards.
type Config struct {
	// Buckets in file order.
	Buckets []Spec
	// Guards maps an activity type to the buckets it draws from, each with
	// the cost of one run, sorted by bucket name: the order tokens are taken in.
	Guards map[string][]Guard
}

// A Guard says that running an activity type takes Cost tokens from Bucket;
// Shards > 0 says Bucket is keyed, with that many shards: the tokens come
// from the bucket of the activity's key.
type Guard struct {
	Bucket string `json:"bucket"`
	Cost   int64  `json:"cost"`
	Shards int    `json:"shards,omitempty"`
}

// MaxGuards bounds the buckets one activity type draws from.
const MaxGuards = 8

// Bucket returns the spec of the named bucket.
func (c *Config) Bucket(name string) (Spec, bool) {
	for _, s := range c.Buckets {
		if s.Name == name {
			return s, true
		}
	}
	return Spec{}, false
}

// Load reads and validates a buckets.yaml file of at most MaxFileSize bytes.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// errTooLarge is the problem with a file of more than MaxFileSize bytes.
var errTooLarge = fmt.Errorf("is larger than %d MiB, the most tb reads from a buckets file", MaxFileSize>>20)

// Parse validates a buckets.yaml document. filename is used in error messages only.
// On failure the error is a ValidationError naming, for every problem, the
// bucket, the field and the line. The file must hold one YAML document of at
// most MaxFileSize bytes.
func Parse(filename string, data []byte) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, ValidationError{{File: filename, Err: errTooLarge}}
	}
	p := &parser{file: filename, cfg: &Config{Guards: map[string][]Guard{}}, guardLine: map[string]*yaml.Node{}}
	p.parse(data)
	for activity, guards := range p.cfg.Guards {
		if len(guards) > MaxGuards {
			last := guards[len(guards)-1]
			p.errorf(p.guardLine[activity], last.Bucket, "activities."+activity, "is guarded by %d buckets; the most is %d", len(guards), MaxGuards)
		}
		sort.Slice(guards, func(i, j int) bool { return guards[i].Bucket < guards[j].Bucket })
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		return nil, p.errs
	}
	return p.cfg, nil
}

type parser struct {
	file string
	cfg  *Config
	errs ValidationError
	// guardLine is, per activity type, the line of its latest guard.
	guardLine map[string]*yaml.Node
}

func (p *parser) errorf(n *yaml.Node, bucket, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &FieldError{File: p.file, Line: line, Bucket: bucket, Field: field, Err: fmt.Errorf(format, args...)})
}

func (p *parser) parse(data []byte) {
	var doc, next yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	err := dec.Decode(&doc)
	if err == nil {
		// A second document would be ignored, and its buckets with it: tb
		// sync-schedules would then delete their Schedules.
		switch err = dec.Decode(&next); {
		case err == io.EOF:
			err = nil
		case err == nil:
			p.errorf(&next, "", "", "the file holds a second YAML document (---); tb reads one: put every bucket in the one buckets list")
			return
		}
	}
	if err == io.EOF {
		err = nil // no document at all: reported below
	}
	if err != nil {
		line, msg := splitYAMLError(err)
		if line == 0 {
			line = badByteLine(data)
		}
		p.errs = append(p.errs, &FieldError{File: p.file, Line: line, Err: errors.New(msg)})
		return
	}
	if len(doc.Content) == 0 {
		p.errorf(nil, "", "buckets", "is required: the file declares no buckets")
		return
	}
	root := resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		p.errorf(root, "", "", "the file must be a mapping with a buckets list")
		return
	}
	var list *yaml.Node
	p.fields(root, "", func(key, val *yaml.Node) {
		switch key.Value {
		case "buckets":
			list = val
		default:
			p.errorf(key, "", key.Value, "is not a known field; the file holds a buckets list")
		}
	})
	if list == nil {
		p.errorf(root, "", "buckets", "is required")
		return
	}
	if list.Kind != yaml.SequenceNode {
		p.errorf(list, "", "buckets", "must be a list of buckets")
		return
	}
	seen := map[string]int{} // bucket name → line
	for i, item := range list.Content {
		p.bucket(resolve(item), i, seen)
	}
}

// fields calls f for each key/value pair of a mapping, reporting duplicate keys.
func (p *parser) fields(m *yaml.Node, bucket string, f func(key, val *yaml.Node)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		key, val := resolve(m.Content[i]), resolve(m.Content[i+1])
		if key.Kind != yaml.ScalarNode {
			p.errorf(key, bucket, "", "keys must be plain names")
			continue
		}
		if line, dup := seen[key.Value]; dup {
			p.errorf(key, bucket, key.Value, "is set twice (first at line %d)", line)
			continue
		}
		seen[key.Value] = key.Line
		f(key, val)
	}
}

func (p *parser) bucket(n *yaml.Node, index int, seen map[string]int) {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "", fmt.Sprintf("buckets[%d]", index), "must be a mapping with name, schedule, amount and maximum")
		return
	}
	// The name labels every other error, so read it first.
	var spec Spec
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := resolve(n.Content[i]), resolve(n.Content[i+1]); k.Value == "name" && v.Kind == yaml.ScalarNode {
			spec.Name = v.Value
		}
	}
	label := spec.Name
	if label == "" {
		label = fmt.Sprintf("buckets[%d]", index)
	}

	lines := map[string]int{"": n.Line}
	var activities *yaml.Node
	ok := true
	p.fields(n, label, func(key, val *yaml.Node) {
		lines[key.Value] = key.Line
		switch key.Value {
		case "name":
			ok = p.str(val, label, "name", &spec.Name) && ok
		case "schedule":
			ok = p.str(val, label, "schedule", &spec.Schedule) && ok
		case "timezone":
			ok = p.str(val, label, "timezone", &spec.Timezone) && ok
		case "amount":
			ok = p.int(val, label, "amount", &spec.Amount) && ok
		case "maximum":
			ok = p.int(val, label, "maximum", &spec.Maximum) && ok
		case "initial":
			var v int64
			if p.int(val, label, "initial", &v) {
				spec.Initial = &v
			} else {
				ok = false
			}
		case "mode":
			ok = p.str(val, label, "mode", &spec.Mode) && ok
		case "keyed":
			ok = p.bool(val, label, "keyed", &spec.Keyed) && ok
		case "shards":
			var v int64
			switch {
			case !p.int(val, label, "shards", &v):
				ok = false
			case v < 1 || v > MaxShards:
				p.errorf(val, label, "shards", "must be 1 to %d, got %d", MaxShards, v)
				ok = false
			default:
				spec.Shards = int(v)
			}
		case "task_queue":
			switch {
			case !p.str(val, label, "task_queue", &spec.TaskQueue):
				ok = false
			case spec.TaskQueue == "":
				// Spec.Validate reads "" as the default; written out, it is a slip.
				p.errorf(val, label, "task_queue", "%v", CheckTaskQueue(""))
				ok = false
			}
		case "activities":
			activities = val
		default:
			p.errorf(key, label, key.Value, "is not a known field; a bucket has name, schedule, timezone, amount, maximum, initial, keyed, shards, mode, task_queue and activities")
			ok = false
		}
	})
	for _, required := range []string{"name", "schedule", "amount", "maximum"} {
		if _, set := lines[required]; !set {
			p.errorf(n, label, required, "is required")
			ok = false
		}
	}
	if ok {
		if err := spec.Validate(); err != nil {
			for _, fe := range err.(ValidationError) {
				fe.File, fe.Bucket = p.file, label
				if fe.Line = lines[fe.Field]; fe.Line == 0 {
					fe.Line = n.Line
				}
				p.errs = append(p.errs, fe)
			}
			ok = false
		}
	}
	if spec.Name != "" {
		if line, dup := seen[spec.Name]; dup {
			p.errorf(n, label, "name", "%q is declared twice (first at line %d)", spec.Name, line)
			ok = false
		} else {
			seen[spec.Name] = lines["name"]
		}
	}
	if activities != nil {
		ok = p.guards(activities, spec, label) && ok
	}
	if ok {
		p.cfg.Buckets = append(p.cfg.Buckets, spec)
	}
}

func (p *parser) guards(n *yaml.Node, spec Spec, label string) bool {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return true
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, label, "activities", "must map activity types to their cost, e.g. {FetchRepo: 1}")
		return false
	}
	ok := true
	p.fields(n, label, func(key, val *yaml.Node) {
		field := "activities." + key.Value
		if key.Value == "" {
			p.errorf(key, label, "activities", "an activity type must not be empty")
			ok = false
			return
		}
		cost := int64(1)
		if !(val.Kind == yaml.ScalarNode && val.Tag == "!!null") && !p.int(val, label, field, &cost) {
			ok = false
			return
		}
		if err := CheckCost(cost, spec.Maximum); err != nil && spec.Maximum > 0 {
			p.errorf(val, label, field, "%v", err)
			ok = false
			return
		}
		p.cfg.Guards[key.Value] = append(p.cfg.Guards[key.Value], Guard{Bucket: spec.Name, Cost: cost, Shards: spec.ShardCount()})
		p.guardLine[key.Value] = key
	})
	return ok
}

func (p *parser) str(n *yaml.Node, bucket, field string, dst *string) bool {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errorf(n, bucket, field, "must be a string")
		return false
	}
	*dst = n.Value
	return true
}

func (p *parser) int(n *yaml.Node, bucket, field string, dst *int64) bool {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!int" {
		var v int64
		if err := n.Decode(&v); err == nil {
			*dst = v
			return true
		}
	}
	p.errorf(n, bucket, field, "must be a whole number, got %s", describe(n))
	return false
}

func (p *parser) bool(n *yaml.Node, bucket, field string, dst *bool) bool {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		var v bool
		if err := n.Decode(&v); err == nil {
			*dst = v
			return true
		}
	}
	p.errorf(n, bucket, field, "must be true or false, got %s", describe(n))
	return false
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "nothing"
}

// resolve follows YAML aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// badByteLine returns the line of the first byte YAML refuses to read (an
// invalid UTF-8 sequence or a control character), or 1: the YAML reader
// reports those without a line.
func badByteLine(data []byte) int {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 || r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return line
		}
		if r == '\n' {
			line++
		}
		i += size
	}
	return 1
}

// splitYAMLError splits "yaml: line 3: did not find expected key" into 3 and the rest.
func splitYAMLError(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if line, convErr := strconv.Atoi(num); convErr == nil {
				return line, text
			}
		}
	}
	return 0, msg
}

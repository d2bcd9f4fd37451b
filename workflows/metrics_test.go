package workflows

import (
	"maps"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"

	"github.com/tokenbucket/tb/bucket"
)

// gauges is a client.MetricsHandler keeping the last value of every gauge,
// by name and tags.
type gauges struct {
	mu   *sync.Mutex
	last map[string]float64
	tags map[string]string
}

func newGauges() gauges { return gauges{mu: &sync.Mutex{}, last: map[string]float64{}} }

func (g gauges) WithTags(tags map[string]string) client.MetricsHandler {
	merged := maps.Clone(g.tags)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, tags)
	return gauges{mu: g.mu, last: g.last, tags: merged}
}

func (g gauges) Counter(string) client.MetricsCounter { return client.MetricsNopHandler.Counter("") }
func (g gauges) Timer(string) client.MetricsTimer     { return client.MetricsNopHandler.Timer("") }
func (g gauges) Gauge(name string) client.MetricsGauge {
	return gaugeFunc(func(v float64) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.last[name+"/"+g.tags[MetricTagBucket]+"/"+g.tags[MetricTagShard]] = v
	})
}

type gaugeFunc func(float64)

func (f gaugeFunc) Update(v float64) { f(v) }

func (g gauges) get(name, bucketName, shard string) (float64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v, ok := g.last[name+"/"+bucketName+"/"+shard]
	return v, ok
}

// A shard of a keyed bucket reports the keys it holds, tagged with its
// shard; an unkeyed bucket its tokens, untagged by shard.
func TestGaugesOfBucketsAndShards(t *testing.T) {
	for _, c := range []struct {
		spec  bucket.Spec
		shard int
		reqs  []AcquireRequest
		name  string
		tag   string
		want  float64
	}{
		{bucket.Spec{Name: "plain", Schedule: "@hourly", Amount: 5, Maximum: 5}, 0,
			[]AcquireRequest{{ID: "a", Cost: 2}}, MetricTokens, "", 3},
		{bucket.Spec{Name: "tenant", Schedule: "@hourly", Amount: 5, Maximum: 5, Keyed: true, Shards: 1}, 0,
			[]AcquireRequest{keyReq("a", "k1", 1), keyReq("b", "k2", 1), keyReq("c", "k1", 1)}, MetricKeys, "0", 2},
	} {
		var s testsuite.WorkflowTestSuite
		g := newGauges()
		s.SetMetricsHandler(g)
		env := s.NewTestWorkflowEnvironment()
		env.SetStartTime(t0)
		Register(env)
		h := &harness{t: t, env: env}
		var r *updateResult
		h.at(time.Second, func() { r = h.acquire("u", c.reqs...) })
		h.run(BucketInput{Spec: c.spec, Shard: c.shard}, 2*time.Second)
		if r == nil || r.rejected != nil || r.err != nil {
			t.Fatalf("%s: acquire: %+v", c.spec.Name, r)
		}
		if v, ok := g.get(c.name, c.spec.Name, c.tag); !ok || v != c.want {
			t.Errorf("%s: %s{shard=%q} = %v (recorded: %v), want %v", c.spec.Name, c.name, c.tag, v, ok, c.want)
		}
	}
}

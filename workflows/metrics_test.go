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
// by name and tags, and every timer's samples, by name.
type gauges struct {
	mu     *sync.Mutex
	last   map[string]float64
	timers map[string][]time.Duration
	tags   map[string]string
}

func newGauges() gauges {
	return gauges{mu: &sync.Mutex{}, last: map[string]float64{}, timers: map[string][]time.Duration{}}
}

func (g gauges) WithTags(tags map[string]string) client.MetricsHandler {
	merged := maps.Clone(g.tags)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, tags)
	return gauges{mu: g.mu, last: g.last, timers: g.timers, tags: merged}
}

func (g gauges) Counter(string) client.MetricsCounter { return client.MetricsNopHandler.Counter("") }
func (g gauges) Timer(name string) client.MetricsTimer {
	return timerFunc(func(d time.Duration) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.timers[name] = append(g.timers[name], d)
	})
}

type timerFunc func(time.Duration)

func (f timerFunc) Record(d time.Duration) { f(d) }
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

// A bucket records its gauges when a run starts, before any change; and
// the lag of every tick it applies: by a refill's signal, and 0 for the
// tick that refill authorized, which it applies as of the tick.
func TestGaugesAtStartAndLagOfEveryTick(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	g := newGauges()
	s.SetMetricsHandler(g)
	env := s.NewTestWorkflowEnvironment()
	env.SetStartTime(t0)
	Register(env)
	h := &harness{t: t, env: env}
	spec := bucket.Spec{Name: "ticks", Schedule: "@every 1s", Amount: 1, Maximum: 7}
	var before float64
	var recorded bool
	h.at(500*time.Millisecond, func() { before, recorded = g.get(MetricTokens, "ticks", "") })
	tick := t0.Add(time.Second)
	h.at(1200*time.Millisecond, func() { h.refill(Refill{ID: tickID(tick), Tick: tick}) })
	h.run(BucketInput{Spec: spec}, 2500*time.Millisecond)
	if !recorded || before != 7 {
		t.Errorf("tokens gauge before any change: %v (recorded: %v), want 7", before, recorded)
	}
	g.mu.Lock()
	lags := g.timers[MetricRefillLag]
	g.mu.Unlock()
	if len(lags) != 2 || lags[0] != 200*time.Millisecond || lags[1] != 0 {
		t.Errorf("refill lags %v, want 200ms (the signal) and 0s (the tick at 2s, applied by the bucket)", lags)
	}
}

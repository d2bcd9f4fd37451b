package main

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSegmentsBreakAtGapsAndNaN(t *testing.T) {
	nan := math.NaN()
	pts := []point{
		{0, 1}, {10, 2}, {20, 3}, // a run
		// no sample at 30: a gap
		{40, 4}, {50, 5},
		{60, nan}, // NaN: a gap
		{70, 7},   // alone
		{80, math.Inf(1)},
		{90, 9}, {100, 10},
	}
	got := segments(pts, 10)
	want := [][]point{
		{{0, 1}, {10, 2}, {20, 3}},
		{{40, 4}, {50, 5}},
		{{70, 7}},
		{{90, 9}, {100, 10}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("segments = %v, want %v", got, want)
	}
	if got := segments([]point{{0, nan}, {10, nan}}, 10); len(got) != 0 {
		t.Errorf("segments of NaNs = %v, want none", got)
	}
	// A sample slightly late is no gap.
	if got := segments([]point{{0, 1}, {10, 1}, {24, 1}}, 10); len(got) != 1 {
		t.Errorf("segments = %v, want one run", got)
	}
}

func TestLegend(t *testing.T) {
	labels := map[string]string{"__name__": "tb_bucket_tokens", "bucket": "demo_api", "result": "denied"}
	for _, tc := range []struct{ format, want string }{
		{"{{bucket}} {{result}}", "demo_api denied"},
		{"{{ bucket }} p99", "demo_api p99"},
		{"{{bucket}} {{missing}}x", "demo_api x"},
		{"", `tb_bucket_tokens{bucket="demo_api", result="denied"}`},
		{"__auto", `tb_bucket_tokens{bucket="demo_api", result="denied"}`},
	} {
		if got := legend(tc.format, labels); got != tc.want {
			t.Errorf("legend(%q) = %q, want %q", tc.format, got, tc.want)
		}
	}
}

func TestSubstitute(t *testing.T) {
	vars := map[string]string{"bucket": ".*", "__rate_interval": "1m"}
	for _, tc := range []struct{ in, want string }{
		{`sum by (bucket) (rate(x_total{bucket=~"$bucket"}[$__rate_interval]))`, `sum by (bucket) (rate(x_total{bucket=~".*"}[1m]))`},
		{`x{bucket=~"${bucket}"}[[[__rate_interval]]]`, `x{bucket=~".*"}[1m]`},
		{`x{b=~"$buckets", c="$other"}`, `x{b=~"$buckets", c="$other"}`},
	} {
		if got := substitute(tc.in, vars); got != tc.want {
			t.Errorf("substitute(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestStyleForOverrides(t *testing.T) {
	var p panel
	p.FieldConfig.Defaults.Unit = "s"
	o := override{}
	o.Matcher.ID, o.Matcher.Options = "byRegexp", ".*refills/s"
	o.Properties = []property{{"unit", "ops"}, {"custom.axisPlacement", "right"}}
	p.FieldConfig.Overrides = []override{o}
	if unit, right := styleFor(p, "demo_api refills/s"); unit != "ops" || !right {
		t.Errorf("refills: %q, right %v; want ops, right", unit, right)
	}
	if unit, right := styleFor(p, "demo_api lag p99"); unit != "s" || right {
		t.Errorf("lag: %q, right %v; want s, left", unit, right)
	}
}

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{0.025, "s", "25 ms"}, {0.0005, "s", "500 µs"}, {2.5, "s", "2.5 s"}, {90, "s", "1.5 min"},
		{0.30000000000000004, "reqps", "0.3 req/s"}, {1000, "none", "1000"}, {20000, "none", "20k"},
	} {
		if got := formatValue(tc.v, tc.unit); got != tc.want {
			t.Errorf("formatValue(%v, %q) = %q, want %q", tc.v, tc.unit, got, tc.want)
		}
	}
}

// A series with a missing step is drawn as two lines, from a Prometheus
// answering query_range; a query with no series is named in the legend.
func TestRenderBreaksLineAtGap(t *testing.T) {
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.Query().Get("query"))
		if r.URL.Query().Get("query") == "absent" {
			io.WriteString(w, `{"status":"success","data":{"resultType":"matrix","result":[]}}`)
			return
		}
		io.WriteString(w, `{"status":"success","data":{"resultType":"matrix","result":[
			{"metric":{"bucket":"demo_api"},"values":[[1000,"1"],[1010,"2"],[1040,"3"],[1050,"4"]]}]}}`)
	}))
	defer srv.Close()
	var d dashboard
	d.Panels = make([]panel, 1)
	p := &d.Panels[0]
	p.Type, p.Title = "timeseries", "Tokens"
	p.GridPos.W, p.GridPos.H = 24, 8
	p.Targets = []target{{`tb_bucket_tokens{bucket=~"$bucket"}`, "{{bucket}} tokens"}, {"absent", "{{bucket}} debt"}}
	c := config{prometheus: srv.URL, start: time.Unix(1000, 0), end: time.Unix(1050, 0), step: 10 * time.Second, rateWindow: time.Minute, width: 800, warnings: io.Discard}
	svg := c.render(context.Background(), d, map[string]string{"bucket": ".*"})
	if want := []string{`tb_bucket_tokens{bucket=~".*"}`, "absent"}; !reflect.DeepEqual(queries, want) {
		t.Errorf("queries = %q, want %q", queries, want)
	}
	if n := strings.Count(svg, "<polyline"); n != 2 {
		t.Errorf("%d polylines, want 2 (the gap at 1020-1030 breaks the line):\n%s", n, svg)
	}
	for _, want := range []string{">demo_api tokens<", ">{{bucket}} debt (no series)<"} {
		if !strings.Contains(svg, want) {
			t.Errorf("no legend entry %s:\n%s", want, svg)
		}
	}
}

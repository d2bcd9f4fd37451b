// Command dashplot draws the timeseries panels of a Grafana dashboard into
// one SVG file, from a Prometheus server: it runs each panel's own queries
// over a time range (/api/v1/query_range) and lays the panels out by their
// gridPos, as Grafana would, without Grafana.
//
//	go run ./internal/dashplot -prometheus http://127.0.0.1:9090 \
//		-dashboard ../deploy/grafana/dashboards/tb.json -last 15m -out /tmp/tb.svg
//
// Every template variable ($bucket) becomes ".*", as "All" would;
// $__rate_interval becomes -rate-interval, $__interval -step. A step at
// which a series has no sample, or a NaN, breaks its line.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// dashboard is the part of a Grafana dashboard's JSON model dashplot reads.
type dashboard struct {
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit string   `json:"unit"`
			Min  *float64 `json:"min"`
			Max  *float64 `json:"max"`
		} `json:"defaults"`
		Overrides []override `json:"overrides"`
	} `json:"fieldConfig"`
	Targets []target `json:"targets"`
}

type target struct {
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat"`
}

type override struct {
	Matcher struct {
		ID      string `json:"id"`
		Options string `json:"options"`
	} `json:"matcher"`
	Properties []property `json:"properties"`
}

type property struct {
	ID    string `json:"id"`
	Value any    `json:"value"`
}

type point struct{ T, V float64 } // T in Unix seconds

type series struct {
	Name   string
	Points []point
	Unit   string
	Right  bool // drawn against the right axis
	Empty  bool // the query returned no series: Name is its legendFormat
}

// varRef matches a dashboard variable: $name, ${name} or [[name]].
var varRef = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]`)

// substitute replaces the variables of expr that vars has, leaving the others.
func substitute(expr string, vars map[string]string) string {
	return varRef.ReplaceAllStringFunc(expr, func(m string) string {
		s := varRef.FindStringSubmatch(m)
		if v, ok := vars[s[1]+s[2]+s[3]]; ok {
			return v
		}
		return m
	})
}

var legendRef = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)

// legend names a series as Grafana does: legendFormat with {{label}}
// replaced by the label's value ("" when absent), or the labels themselves.
func legend(format string, labels map[string]string) string {
	if format != "" && format != "__auto" {
		return legendRef.ReplaceAllStringFunc(format, func(m string) string {
			return labels[legendRef.FindStringSubmatch(m)[1]]
		})
	}
	var kv []string
	for k, v := range labels {
		if k != "__name__" {
			kv = append(kv, fmt.Sprintf("%s=%q", k, v))
		}
	}
	sort.Strings(kv)
	return labels["__name__"] + "{" + strings.Join(kv, ", ") + "}"
}

// segments splits points into the runs drawn as one line each: a run ends
// where a value is not finite or the next sample is more than a step later.
func segments(pts []point, step float64) [][]point {
	var out [][]point
	var cur []point
	for _, p := range pts {
		gap := len(cur) > 0 && p.T-cur[len(cur)-1].T > 1.5*step
		if math.IsNaN(p.V) || math.IsInf(p.V, 0) || gap {
			if len(cur) > 0 {
				out = append(out, cur)
			}
			cur = nil
		}
		if !math.IsNaN(p.V) && !math.IsInf(p.V, 0) {
			cur = append(cur, p)
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// queryRange runs expr over [start, end] and returns its series, unnamed.
func queryRange(ctx context.Context, base, expr string, start, end time.Time, step time.Duration) ([]map[string]string, [][]point, error) {
	q := url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(start.Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix(), 10)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/api/v1/query_range?"+q.Encode(), nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", resp.Status, err)
	}
	if body.Status != "success" {
		return nil, nil, fmt.Errorf("%s: %s", resp.Status, body.Error)
	}
	var labels []map[string]string
	var points [][]point
	for _, r := range body.Data.Result {
		pts := make([]point, 0, len(r.Values))
		for _, v := range r.Values {
			t, _ := v[0].(float64)
			s, _ := v[1].(string)
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("value %q: %w", s, err)
			}
			pts = append(pts, point{t, f})
		}
		labels, points = append(labels, r.Metric), append(points, pts)
	}
	return labels, points, nil
}

// styleFor applies the panel's overrides to the series named name.
func styleFor(p panel, name string) (unit string, right bool) {
	unit = p.FieldConfig.Defaults.Unit
	for _, o := range p.FieldConfig.Overrides {
		match := false
		switch o.Matcher.ID {
		case "byName":
			match = o.Matcher.Options == name
		case "byRegexp":
			re, err := regexp.Compile(o.Matcher.Options)
			match = err == nil && re.MatchString(name)
		}
		if !match {
			continue
		}
		for _, prop := range o.Properties {
			switch v, _ := prop.Value.(string); prop.ID {
			case "unit":
				unit = v
			case "custom.axisPlacement":
				right = v == "right"
			}
		}
	}
	return unit, right
}

type config struct {
	prometheus  string
	start, end  time.Time
	step        time.Duration
	rateWindow  time.Duration
	width       int
	note        string
	warnings    io.Writer
	queryFailed bool
}

// panelSeries runs the panel's queries; a failed query becomes an error
// shown in the panel.
func (c *config) panelSeries(ctx context.Context, p panel, vars map[string]string) ([]series, []string) {
	var out []series
	var errs []string
	for _, t := range p.Targets {
		expr := substitute(t.Expr, vars)
		labels, points, err := queryRange(ctx, c.prometheus, expr, c.start, c.end, c.step)
		if err != nil {
			c.queryFailed = true
			fmt.Fprintf(c.warnings, "dashplot: panel %q: %s: %v\n", p.Title, expr, err)
			errs = append(errs, err.Error())
			continue
		}
		var got []series
		for i := range labels {
			s := series{Name: legend(t.LegendFormat, labels[i]), Points: points[i]}
			s.Unit, s.Right = styleFor(p, s.Name)
			got = append(got, s)
		}
		sort.SliceStable(got, func(i, j int) bool { return got[i].Name < got[j].Name })
		if len(got) == 0 {
			// Grafana shows nothing for such a query; say so in the legend.
			got = append(got, series{Name: t.LegendFormat, Empty: true})
		}
		out = append(out, got...)
	}
	return out, errs
}

func main() {
	var c config
	var dashPath, out, start, end string
	var last time.Duration
	flag.StringVar(&c.prometheus, "prometheus", "http://127.0.0.1:9090", "base URL of the Prometheus server")
	flag.StringVar(&dashPath, "dashboard", "../deploy/grafana/dashboards/tb.json", "Grafana dashboard JSON")
	flag.StringVar(&start, "start", "", "start of the range, RFC 3339 (with -end; instead of -last)")
	flag.StringVar(&end, "end", "", "end of the range, RFC 3339")
	flag.DurationVar(&last, "last", 15*time.Minute, "the range ending now, when -start is not given")
	flag.DurationVar(&c.step, "step", 10*time.Second, "query resolution step")
	flag.DurationVar(&c.rateWindow, "rate-interval", time.Minute, "what $__rate_interval becomes")
	flag.IntVar(&c.width, "width", 1600, "width of the SVG in pixels")
	flag.StringVar(&out, "out", "dashboard.svg", "SVG file to write")
	flag.StringVar(&c.note, "note", "", "a line of text to print under the title, about the run")
	flag.Parse()
	c.warnings = os.Stderr
	if err := c.setRange(start, end, last); err != nil {
		fmt.Fprintln(os.Stderr, "dashplot:", err)
		os.Exit(2)
	}
	data, err := os.ReadFile(dashPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashplot:", err)
		os.Exit(1)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		fmt.Fprintf(os.Stderr, "dashplot: %s: %v\n", dashPath, err)
		os.Exit(1)
	}
	vars := map[string]string{
		"__rate_interval": promDuration(c.rateWindow),
		"__interval":      promDuration(c.step),
		"__range":         promDuration(c.end.Sub(c.start)),
	}
	for _, v := range d.Templating.List {
		vars[v.Name] = ".*"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	svg := c.render(ctx, d, vars)
	if err := os.WriteFile(out, []byte(svg), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "dashplot:", err)
		os.Exit(1)
	}
	if c.queryFailed {
		os.Exit(1)
	}
}

func (c *config) setRange(start, end string, last time.Duration) error {
	c.end = time.Now()
	c.start = c.end.Add(-last)
	var err error
	if end != "" {
		if c.end, err = time.Parse(time.RFC3339, end); err != nil {
			return fmt.Errorf("-end: %w", err)
		}
	}
	if start != "" {
		if c.start, err = time.Parse(time.RFC3339, start); err != nil {
			return fmt.Errorf("-start: %w", err)
		}
	} else if end != "" {
		c.start = c.end.Add(-last)
	}
	if !c.start.Before(c.end) || c.step <= 0 {
		return errors.New("the range must end after it starts, and -step be positive")
	}
	return nil
}

// promDuration writes d as Prometheus reads it: 1m, 90s, 1500ms.
func promDuration(d time.Duration) string {
	switch {
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

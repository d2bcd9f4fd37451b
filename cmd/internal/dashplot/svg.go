package main

import (
	"context"
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Grafana's classic palette.
var colors = []string{"#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642", "#CCA300", "#447EBC", "#C15C17"}

const (
	rowHeight = 38.0 // pixels per gridPos row
	header    = 64.0
	pad       = 4.0
	charWidth = 6.2 // of the 11px font, roughly
)

// render draws the dashboard's panels as an SVG document.
func (c *config) render(ctx context.Context, d dashboard, vars map[string]string) string {
	var b strings.Builder
	col := float64(c.width) / 24
	rows := 0
	for _, p := range d.Panels {
		rows = max(rows, p.GridPos.Y+p.GridPos.H)
	}
	height := header + float64(rows)*rowHeight + pad
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%.0f" viewBox="0 0 %d %.0f" font-family="Helvetica, Arial, sans-serif" font-size="11" fill="#333">`+"\n", c.width, height, c.width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#f4f5f5"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="16" font-weight="bold">%s</text>`+"\n", pad+4, esc(d.Title))
	fmt.Fprintf(&b, `<text x="%.0f" y="38" fill="#666">%s – %s UTC · step %s · $__rate_interval %s · all buckets · queried from %s</text>`+"\n",
		pad+4, c.start.UTC().Format("2006-01-02 15:04:05"), c.end.UTC().Format("15:04:05"), c.step, promDuration(c.rateWindow), esc(c.prometheus))
	if c.note != "" {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#666">%s</text>`+"\n", pad+4, header-6, esc(c.note))
	}
	for _, p := range d.Panels {
		g := p.GridPos
		box := rect{float64(g.X)*col + pad, header + float64(g.Y)*rowHeight + pad, float64(g.W)*col - 2*pad, float64(g.H)*rowHeight - 2*pad}
		c.drawPanel(ctx, &b, p, vars, box)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

type rect struct{ X, Y, W, H float64 }

func (c *config) drawPanel(ctx context.Context, b *strings.Builder, p panel, vars map[string]string, r rect) {
	fmt.Fprintf(b, `<g><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="3" fill="#fff" stroke="#d8d9da"/>`+"\n", r.X, r.Y, r.W, r.H)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="13" font-weight="bold">%s</text>`+"\n", r.X+8, r.Y+18, esc(p.Title))
	defer b.WriteString("</g>\n")
	if p.Type != "timeseries" {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#999">panel type %q is not drawn</text>`+"\n", r.X+8, r.Y+40, p.Type)
		return
	}
	ss, errs := c.panelSeries(ctx, p, vars)

	// The legend, flowing left to right under the plot.
	type item struct {
		x, y float64
		text string
	}
	var items []item
	x, line := 0.0, 0
	for _, s := range ss {
		text := s.Name
		switch {
		case s.Empty:
			text += " (no series)"
		case len(segments(s.Points, c.step.Seconds())) == 0:
			text += " (no data)"
		}
		w := 26 + charWidth*float64(utf8.RuneCountInString(text))
		if x > 0 && x+w > r.W-16 {
			x, line = 0, line+1
		}
		items = append(items, item{x, float64(line), text})
		x += w
	}
	legendH := 0.0
	if len(items) > 0 {
		legendH = float64(line+1)*15 + 4
	}
	plot := rect{X: r.X + 62, Y: r.Y + 32}
	plot.W = r.X + r.W - 14 - plot.X
	plot.H = r.Y + r.H - legendH - 24 - plot.Y
	var left, right []series
	for _, s := range ss {
		if s.Right {
			right = append(right, s)
		} else {
			left = append(left, s)
		}
	}
	if len(right) > 0 {
		plot.W -= 52
	}

	// Axes.
	t0, t1 := float64(c.start.Unix()), float64(c.end.Unix())
	xOf := func(t float64) float64 { return plot.X + (t-t0)/(t1-t0)*plot.W }
	every := timeStep(c.end.Sub(c.start))
	for t := math.Ceil(t0/every) * every; t <= t1; t += every {
		layout := "15:04"
		if every < 60 {
			layout = "15:04:05"
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", xOf(t), plot.Y, xOf(t), plot.Y+plot.H)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#666">%s</text>`+"\n", xOf(t), plot.Y+plot.H+14, time.Unix(int64(t), 0).UTC().Format(layout))
	}
	leftY := c.axis(b, p, left, plot, plot.X-6, "end", true)
	rightY := c.axis(b, p, right, plot, plot.X+plot.W+6, "start", false)
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#ccc"/>`+"\n", plot.X, plot.Y, plot.W, plot.H)

	// Lines: one polyline per run of samples; a lone sample is a dot.
	drawn := false
	for i, s := range ss {
		yOf, color := leftY, colors[i%len(colors)]
		if s.Right {
			yOf = rightY
		}
		for _, seg := range segments(s.Points, c.step.Seconds()) {
			drawn = true
			if len(seg) == 1 {
				fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="1.6" fill="%s"/>`+"\n", xOf(seg[0].T), yOf(seg[0].V), color)
				continue
			}
			pts := make([]string, len(seg))
			for k, pt := range seg {
				pts[k] = fmt.Sprintf("%.1f,%.1f", xOf(pt.T), yOf(pt.V))
			}
			fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.5" stroke-linejoin="round" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		}
	}
	switch {
	case len(errs) > 0:
		for k, e := range errs {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#c4162a">query failed: %s</text>`+"\n", plot.X+8, plot.Y+18+14*float64(k), esc(e))
		}
	case !drawn:
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="14" fill="#999">No data</text>`+"\n", plot.X+plot.W/2, plot.Y+plot.H/2)
	}
	for i, it := range items {
		x, y := r.X+10+it.x, r.Y+r.H-legendH+it.y*15+8
		color, fill := colors[i%len(colors)], "#333"
		if ss[i].Empty {
			color, fill = "#ccc", "#999"
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", x, y, x+14, y, color)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="%s">%s</text>`+"\n", x+19, y+4, fill, esc(it.text))
	}
}

// axis draws the value axis of ss, labelled at labelX, and returns its
// scale; grid draws its lines across the plot.
func (c *config) axis(b *strings.Builder, p panel, ss []series, plot rect, labelX float64, anchor string, grid bool) func(float64) float64 {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, pt := range s.Points {
			if !math.IsNaN(pt.V) && !math.IsInf(pt.V, 0) {
				lo, hi = math.Min(lo, pt.V), math.Max(hi, pt.V)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0, 1
	}
	def := p.FieldConfig.Defaults
	if def.Min != nil {
		lo = *def.Min
	}
	if def.Max != nil {
		hi = *def.Max
	}
	if hi <= lo {
		hi = lo + 1
	}
	step := niceStep(hi - lo)
	if def.Max == nil {
		hi = math.Ceil(hi/step-1e-9) * step
	}
	if def.Min == nil {
		lo = math.Floor(lo/step+1e-9) * step
	}
	yOf := func(v float64) float64 { return plot.Y + plot.H - (v-lo)/(hi-lo)*plot.H }
	if len(ss) == 0 && !grid {
		return yOf
	}
	unit := def.Unit
	if len(ss) > 0 {
		unit = ss[0].Unit
	}
	for v := math.Ceil(lo/step-1e-9) * step; v <= hi+step*1e-9; v += step {
		if math.Abs(v) < step*1e-9 {
			v = 0 // not -0, nor 1e-17
		}
		if grid {
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", plot.X, yOf(v), plot.X+plot.W, yOf(v))
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="%s" fill="#666">%s</text>`+"\n", labelX, yOf(v)+4, anchor, esc(formatValue(v, unit)))
	}
	return yOf
}

// niceStep is a step of 1, 2, 2.5 or 5 times a power of ten giving about
// four intervals over span.
func niceStep(span float64) float64 {
	raw := span / 4
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*mag >= raw*0.999 {
			return m * mag
		}
	}
	return 10 * mag
}

// timeStep is the spacing of the time axis's ticks: at most about eight.
func timeStep(span time.Duration) float64 {
	for _, s := range []float64{10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200} {
		if span.Seconds()/s <= 8 {
			return s
		}
	}
	return 86400
}

// formatValue labels an axis tick in Grafana's unit: s, reqps, ops, none.
func formatValue(v float64, unit string) string {
	switch unit {
	case "s":
		a := math.Abs(v)
		switch {
		case a == 0:
			return "0 s"
		case a < 1e-3:
			return number(v*1e6) + " µs"
		case a < 1:
			return number(v*1e3) + " ms"
		case a < 60:
			return number(v) + " s"
		case a < 3600:
			return number(v/60) + " min"
		}
		return number(v/3600) + " h"
	case "reqps":
		return number(v) + " req/s"
	case "ops":
		return number(v) + " ops/s"
	}
	if math.Abs(v) >= 1e4 {
		return number(v/1e3) + "k"
	}
	return number(v)
}

// number writes v with up to three decimals and no trailing zeros.
func number(v float64) string {
	return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
}

func esc(s string) string { return html.EscapeString(s) }

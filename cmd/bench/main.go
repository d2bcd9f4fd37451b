// Command bench measures tb on an embedded Temporal server and prints a
// markdown report of ratios measured side by side in one run:
//
//	go run ./bench                  # the whole set, ~17 minutes on 2 cores
//	go run ./bench -long            # larger workloads, more repetitions
//	go run ./bench -only overhead,drain -json results.json
//	go run ./bench -long -only phases # tb's drain of 300 at six phases of its Schedule
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// config is what every scenario reads.
type config struct {
	long bool
	reps int
	log  io.Writer
}

// scale picks the default or the -long size of a workload.
func (c config) scale(short, long int) int {
	if c.long {
		return long
	}
	return short
}

func (c config) logf(format string, args ...any) {
	fmt.Fprintf(c.log, "# "+format+"\n", args...)
}

// Report is everything one run measured; -json writes it.
type Report struct {
	Started     time.Time       `json:"started"`
	Seconds     float64         `json:"seconds"`
	Machine     string          `json:"machine"`
	Long        bool            `json:"long"`
	Overhead    []OverheadRow   `json:"overhead,omitempty"`
	Throughput  []ThroughputRow `json:"throughput,omitempty"`
	Drain       []DrainRow      `json:"drain,omitempty"`
	DrainPhases []DrainPhaseRow `json:"drainPhases,omitempty"` // -long only
	CAN         *CANResult      `json:"continueAsNew,omitempty"`
	Fleet       []FleetRow      `json:"fleet,omitempty"`
	Comeback    []ComebackRow   `json:"comeback,omitempty"`
	Refill      *RefillResult   `json:"refill,omitempty"`
	Many        []ManyResult    `json:"manyBuckets,omitempty"`
	Stacked     *StackedResult  `json:"stacked,omitempty"`
	Keyed       *KeyedResult    `json:"keyed,omitempty"`
}

var scenarios = []string{"overhead", "throughput", "drain", "can", "fleet", "comeback", "refill", "many", "stacked", "keyed"}

// extraScenarios run only when named: phases is tb's drain at six phases of
// its Schedule (-long drain runs three of them after its comparison rows).
var extraScenarios = []string{"phases"}

func main() {
	if isWorkerProcess() {
		runWorkerProcess()
		return
	}
	long := flag.Bool("long", false, "larger workloads and more repetitions")
	only := flag.String("only", strings.Join(scenarios, ","), "scenarios to run, comma-separated: "+strings.Join(slices.Concat(scenarios, extraScenarios), ", "))
	jsonPath := flag.String("json", "bench-results.json", "where to write the results as JSON (\"\" for nowhere)")
	flag.Func("fleet-processes", "fleet sizes of the fleet scenario, comma-separated (default 8,16,32,64)", func(v string) error {
		fleetSizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return fmt.Errorf("%q is not a number of processes", f)
			}
			fleetSizes = append(fleetSizes, n)
		}
		return nil
	})
	flag.Parse()

	cfg := config{long: *long, reps: 3, log: os.Stderr}
	if *long {
		cfg.reps = 5
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	report := &Report{Started: time.Now(), Long: *long,
		Machine: fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())}
	var err error
	for _, name := range strings.Split(*only, ",") {
		if !slices.Contains(scenarios, name) && !slices.Contains(extraScenarios, name) {
			fmt.Fprintf(os.Stderr, "bench: unknown scenario %q; want some of %s\n", name, strings.Join(slices.Concat(scenarios, extraScenarios), ", "))
			os.Exit(2)
		}
		cfg.logf("scenario %s", name)
		switch name {
		case "overhead":
			report.Overhead, err = runOverhead(ctx, cfg)
		case "throughput":
			report.Throughput, err = runThroughput(ctx, cfg)
		case "drain":
			report.Drain, report.DrainPhases, err = runDrain(ctx, cfg)
		case "phases":
			report.DrainPhases, err = runDrainPhases(ctx, cfg)
		case "can":
			report.CAN, err = runCAN(ctx, cfg)
		case "fleet":
			report.Fleet, err = runFleet(ctx, cfg)
		case "comeback":
			report.Comeback, err = runComeback(ctx, cfg)
		case "refill":
			report.Refill, err = runRefill(ctx, cfg)
		case "many":
			report.Many, err = runMany(ctx, cfg)
		case "stacked":
			report.Stacked, err = runStacked(ctx, cfg)
		case "keyed":
			report.Keyed, err = runKeyed(ctx, cfg)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", name, err)
			os.Exit(1)
		}
	}
	report.Seconds = time.Since(report.Started).Seconds()
	printMarkdown(os.Stdout, report)
	if *jsonPath != "" {
		data, _ := json.MarshalIndent(report, "", "  ")
		if err := os.WriteFile(*jsonPath, append(data, '\n'), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
	}
}

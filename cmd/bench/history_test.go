package main

import (
	"slices"
	"testing"
	"time"

	"github.com/tokenbucket/tb/bucket"
)

func TestTickLags(t *testing.T) {
	sched, err := bucket.ParseSchedule("@every 1s", "")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int, ms int) time.Time {
		return t0.Add(time.Duration(s)*time.Second + time.Duration(ms)*time.Millisecond)
	}
	ms := func(v ...int) []time.Duration {
		var ds []time.Duration
		for _, x := range v {
			ds = append(ds, time.Duration(x)*time.Millisecond)
		}
		return ds
	}
	tests := []struct {
		name              string
		got               arrivals
		signal, effective []time.Duration
		nextOnly          []time.Duration // effective, each refill authorizing the next tick alone
		missing           int
	}{
		{
			name: "each signal before the next tick: every tick after the first applies on time",
			got:  arrivals{at(0, 0): at(0, 300), at(1, 0): at(1, 900), at(2, 0): at(2, 10)},
			// The first tick has no previous signal: its own lag.
			signal: ms(300, 900, 10), effective: ms(300, 0, 0), nextOnly: ms(300, 0, 0),
		},
		{
			name:   "a signal after the next tick delays that tick by as much",
			got:    arrivals{at(0, 0): at(1, 200), at(1, 0): at(1, 250)},
			signal: ms(1200, 250), effective: ms(1200, 200),
		},
		{
			name:   "a tick is applicable by its own signal at the latest",
			got:    arrivals{at(0, 0): at(1, 500), at(1, 0): at(1, 100)},
			signal: ms(1500, 100), effective: ms(1500, 100),
		},
		{
			name: "a signal more than a period late: the tick after it is authorized by an earlier refill",
			got:  arrivals{at(0, 0): at(0, 100), at(1, 0): at(1, 100), at(2, 0): at(3, 600), at(3, 0): at(3, 700), at(4, 0): at(4, 100)},
			// 3s waits for none of 2s's refill: 0s and 1s authorized it.
			signal: ms(100, 100, 1600, 700, 100), effective: ms(100, 0, 0, 0, 0),
			nextOnly: ms(100, 0, 0, 600, 0),
		},
		{
			name: "signals later than the lead: the earliest authorizer decides",
			got:  arrivals{at(0, 0): at(3, 500), at(1, 0): at(4, 500), at(2, 0): at(5, 500), at(3, 0): at(6, 500), at(4, 0): at(7, 500)},
			// 1s waits for 0s's refill (3.5s); 4s is authorized by 1s, 2s and 3s, the earliest to arrive 1s's, at 4.5s.
			signal: ms(3500, 3500, 3500, 3500, 3500), effective: ms(3500, 2500, 1500, 500, 500),
			nextOnly: ms(3500, 2500, 2500, 2500, 2500),
		},
		{
			name:   "a missing signal: no lags for its tick, and the next is authorized by an earlier one",
			got:    arrivals{at(0, 0): at(0, 100), at(2, 0): at(2, 400)},
			signal: ms(100, 400), effective: ms(100, 0), nextOnly: ms(100, 400), missing: 1,
		},
		{
			name:   "signals missing for longer than the lead: the next counts its own",
			got:    arrivals{at(0, 0): at(0, 100), at(4, 0): at(4, 400)},
			signal: ms(100, 400), effective: ms(100, 400), missing: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signal, effective, missing := tt.got.tickLags(sched, bucket.AuthorizeLead)
			if !slices.Equal(signal, tt.signal) || !slices.Equal(effective, tt.effective) || missing != tt.missing {
				t.Errorf("got signal %v, effective %v, missing %d; want %v, %v, %d", signal, effective, missing, tt.signal, tt.effective, tt.missing)
			}
			if _, nextOnly, _ := tt.got.tickLags(sched, 0); tt.nextOnly != nil && !slices.Equal(nextOnly, tt.nextOnly) {
				t.Errorf("got effective %v with the next tick alone authorized; want %v", nextOnly, tt.nextOnly)
			}
		})
	}
}

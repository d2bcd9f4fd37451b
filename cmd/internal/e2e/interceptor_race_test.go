//go:build race

package e2e_test

// raceEnabled: the race detector slows the in-process Temporal server several times over.
const raceEnabled = true

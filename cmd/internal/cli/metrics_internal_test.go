package cli

import (
	"errors"
	"log/slog"
	"net"
	"testing"
)

func TestMetricsAddress(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	// tb dev's default, taken: a free port of the same host.
	m, err := metricsFlag{address: taken.Addr().String(), fallback: true}.serve(false, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.Addr().(*net.TCPAddr); got.String() == taken.Addr().String() || !got.IP.IsLoopback() {
		t.Errorf("serving at %v, want another port of 127.0.0.1", got)
	}
	// An address asked for, taken: an error.
	if _, err := (metricsFlag{address: taken.Addr().String(), fallback: true}).serve(true, logger); err == nil {
		t.Error("serving on a taken address given with --metrics-address: no error")
	}
	// Empty: none.
	if m, err := (metricsFlag{}).serve(true, logger); m != nil || err != nil {
		t.Errorf("--metrics-address \"\": %v, %v", m, err)
	}
	// Not host:port: a usage error.
	var usage usageError
	if _, err := (metricsFlag{address: "9464"}).serve(true, logger); !errors.As(err, &usage) {
		t.Errorf("--metrics-address 9464: %v, want a usage error", err)
	}
}

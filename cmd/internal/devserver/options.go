package devserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync/atomic"
)

// resolved is Options with defaults applied, hosts checked and free ports chosen.
type resolved struct {
	// frontend is where the frontend listens.
	frontend hostPort
	// frontendDial is how this process reaches the frontend: the same as
	// frontend, except that an unspecified host (0.0.0.0, ::) becomes loopback.
	frontendDial hostPort
	namespace    string
	ephemeral    bool
	dbFile       string // absolute; "" when ephemeral
	// frontendHTTPPort is where the frontend serves its HTTP API (and Nexus
	// over HTTP), on the frontend's host.
	frontendHTTPPort int
	ui               *hostPort
	// logger receives all logs; it goes quiet (errors only) once quiet is set.
	logger *slog.Logger
	quiet  *atomic.Bool
	// dynamicConfig overrides the defaults of dynamicConfig().
	dynamicConfig map[string]any
}

func resolve(opts Options) (*resolved, error) {
	r := &resolved{
		dynamicConfig: opts.DynamicConfig,
		namespace:     opts.Namespace,
		ephemeral:     opts.Ephemeral,
		quiet:         new(atomic.Bool),
	}
	if r.namespace == "" {
		r.namespace = defaultNamespace
	}
	handler := slog.DiscardHandler
	if opts.Logger != nil {
		handler = opts.Logger.Handler()
	}
	r.logger = slog.New(quietHandler{next: handler, quiet: r.quiet})

	if !r.ephemeral {
		if opts.DBFile == "" {
			return nil, errors.New("option DBFile is required unless Ephemeral is set")
		}
		abs, err := filepath.Abs(opts.DBFile)
		if err != nil {
			return nil, fmt.Errorf("option DBFile %q: %w", opts.DBFile, err)
		}
		r.dbFile = abs
	}

	address := opts.Address
	if address == "" {
		address = defaultAddress
	}
	frontend, err := listenAddress(address)
	if err != nil {
		return nil, fmt.Errorf("option Address: %w", err)
	}
	r.frontend = frontend
	r.frontendDial = frontend
	if ip := net.ParseIP(frontend.host); ip.IsUnspecified() {
		r.frontendDial.host = loopbackFor(ip)
	}
	if r.frontendHTTPPort, err = freePort(frontend.host); err != nil {
		return nil, fmt.Errorf("frontend HTTP port: %w", err)
	}

	if opts.UIAddress != "" {
		ui, err := listenAddress(opts.UIAddress)
		if err != nil {
			return nil, fmt.Errorf("option UIAddress: %w", err)
		}
		if ui == frontend {
			return nil, fmt.Errorf("option UIAddress %s is the frontend's address", ui)
		}
		r.ui = &ui
	}
	return r, nil
}

// listenAddress parses host:port, maps "localhost" to 127.0.0.1 and an empty
// host to 0.0.0.0, and replaces port 0 with a free port. A non-zero port must
// be free.
func listenAddress(address string) (hostPort, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return hostPort{}, fmt.Errorf("%q: %w", address, err)
	}
	switch host {
	case "localhost":
		host = loopback
	case "":
		host = "0.0.0.0"
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return hostPort{}, fmt.Errorf("%q: host must be an IP address or localhost", address)
	}
	host = ip.String()
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return hostPort{}, fmt.Errorf("%q: invalid port %q", address, portStr)
	}
	if port == 0 {
		port, err = freePort(host)
		if err != nil {
			return hostPort{}, err
		}
	} else if err := checkPortFree(host, port); err != nil {
		return hostPort{}, err
	}
	return hostPort{host: host, port: port}, nil
}

// loopbackFor returns the loopback address of ip's family.
func loopbackFor(ip net.IP) string {
	if ip.To4() == nil {
		return net.IPv6loopback.String()
	}
	return loopback
}

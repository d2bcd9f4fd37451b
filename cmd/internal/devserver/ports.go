package devserver

import (
	"fmt"
	"net"
	"runtime"
	"strconv"
)

// loopback is where the internal services (history, matching, worker) listen.
const loopback = "127.0.0.1"

// hostPort is a host (an IP address) and a port.
type hostPort struct {
	host string
	port int
}

func (h hostPort) String() string { return net.JoinHostPort(h.host, strconv.Itoa(h.port)) }

// freePort returns a TCP port on host that nothing listens on.
//
// It follows go.temporal.io/server/common/testing/freeport: after binding
// port 0 it connects to the port and closes the accepted side first, which
// leaves the port in TIME_WAIT. On Linux and the BSDs that keeps the kernel
// from handing the same port to the next bind(:0) for a while (the following
// explicit bind still succeeds thanks to SO_REUSEADDR), so two servers
// started back to back in one process do not pick the same ports.
func freePort(host string) (port int, err error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	defer func() {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("pick a free port on %s: %w", host, cerr)
		}
	}()
	addr := l.Addr().(*net.TCPAddr)
	port = addr.Port
	if runtime.GOOS == "darwin" || runtime.GOOS == "windows" {
		// These allocate ephemeral ports sequentially; no need to reserve.
		return port, nil
	}
	dialAddr := &net.TCPAddr{IP: addr.IP, Port: port}
	if addr.IP.IsUnspecified() {
		dialAddr.IP = net.ParseIP(loopbackFor(addr.IP))
	}
	c, err := net.DialTCP("tcp", nil, dialAddr)
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	defer c.Close()
	accepted, err := l.Accept()
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	// Closing the accepted side first is what puts the port in TIME_WAIT.
	if err := accepted.Close(); err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	return port, nil
}

// checkPortFree reports an error if host:port cannot be listened on.
func checkPortFree(host string, port int) error {
	address := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", address)
	if err != nil {
		return fmt.Errorf("%s is not available: %w", address, err)
	}
	if err := l.Close(); err != nil {
		return fmt.Errorf("release %s: %w", address, err)
	}
	return nil
}

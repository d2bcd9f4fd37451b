package devserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	uiserveroptions "github.com/temporalio/ui-server/v2/server/server_options"
)

// newUIServer configures, without starting, the Temporal Web UI for the
// frontend. The UI's web assets are embedded in the ui-server module.
func newUIServer(r *resolved) *uiserver.Server {
	host := r.ui.host
	if strings.Contains(host, ":") {
		// The UI server joins host and port with a plain colon.
		host = "[" + host + "]"
	}
	return uiserver.NewServer(uiserveroptions.WithConfigProvider(&uiconfig.Config{
		Host:                host,
		Port:                r.ui.port,
		TemporalGRPCAddress: r.frontendDial.String(),
		EnableUI:            true,
		DefaultNamespace:    r.namespace,
		// Served over plain HTTP, so the CSRF cookie must not require HTTPS.
		CORS:     uiconfig.CORS{CookieInsecure: true},
		HideLogs: true,
	}))
}

// waitForUI polls the UI's health endpoint until it answers 200.
func waitForUI(ctx context.Context, address string) error {
	url := "http://" + address + "/healthz"
	httpClient := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	defer httpClient.CloseIdleConnections()
	var lastErr error
	for {
		lastErr = getOK(ctx, httpClient, url)
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("UI on %s not ready: %w (last error: %w)", address, ctx.Err(), lastErr)
		case <-time.After(pollInterval):
		}
	}
}

func getOK(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	if err := resp.Body.Close(); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

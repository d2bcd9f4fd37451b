package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/pflag"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"
	"go.temporal.io/sdk/log"
)

// Defaults shared with `temporal server start-dev`.
const (
	DefaultAddress   = "127.0.0.1:7233"
	DefaultNamespace = "default"
)

// connFlags are the connection settings, read like the temporal CLI reads
// them: a config-file profile, then TEMPORAL_* environment variables, then flags.
type connFlags struct {
	address, namespace, apiKey string
	profile, configFile        string

	tls                        bool
	tlsCertPath, tlsKeyPath    string
	tlsCAPath, tlsServerName   string
	tlsDisableHostVerification bool
	connectTimeout             time.Duration
}

func (c *connFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&c.address, "address", "", "Temporal frontend host:port (env TEMPORAL_ADDRESS; default "+DefaultAddress+")")
	fs.StringVarP(&c.namespace, "namespace", "n", "", "Temporal namespace (env TEMPORAL_NAMESPACE; default "+DefaultNamespace+")")
	fs.StringVar(&c.apiKey, "api-key", "", "API key, e.g. for Temporal Cloud; enables TLS (env TEMPORAL_API_KEY)")
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS (env TEMPORAL_TLS)")
	fs.StringVar(&c.tlsCertPath, "tls-cert-path", "", "client certificate for mTLS (env TEMPORAL_TLS_CLIENT_CERT_PATH)")
	fs.StringVar(&c.tlsKeyPath, "tls-key-path", "", "client key for mTLS (env TEMPORAL_TLS_CLIENT_KEY_PATH)")
	fs.StringVar(&c.tlsCAPath, "tls-ca-path", "", "server CA certificate (env TEMPORAL_TLS_SERVER_CA_CERT_PATH)")
	fs.StringVar(&c.tlsServerName, "tls-server-name", "", "server name to verify (env TEMPORAL_TLS_SERVER_NAME)")
	fs.BoolVar(&c.tlsDisableHostVerification, "tls-disable-host-verification", false, "skip verifying the server's host name")
	fs.StringVar(&c.profile, "profile", "", "profile in the Temporal config file (env TEMPORAL_PROFILE)")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 10*time.Second, "give up connecting to Temporal after this long (> 0)")
	fs.StringVar(&c.configFile, "config-file", "", "Temporal config file (env TEMPORAL_CONFIG_FILE; default the temporal CLI's)")
}

// clientOptions resolves the settings into client options.
func (c *connFlags) clientOptions(fs *pflag.FlagSet, env envconfig.EnvLookup) (client.Options, error) {
	prof, err := envconfig.LoadClientConfigProfile(envconfig.LoadClientConfigProfileOptions{
		ConfigFilePath:    c.configFile,
		ConfigFileProfile: c.profile,
		EnvLookup:         env,
	})
	if err != nil {
		return client.Options{}, fmt.Errorf("reading connection settings: %w", err)
	}
	set := func(name string) bool { return fs.Changed(name) }
	if set("address") {
		prof.Address = c.address
	}
	if set("namespace") {
		prof.Namespace = c.namespace
	}
	if set("api-key") {
		prof.APIKey = c.apiKey
	}
	tlsFlags := []string{"tls", "tls-cert-path", "tls-key-path", "tls-ca-path", "tls-server-name", "tls-disable-host-verification"}
	for _, name := range tlsFlags {
		if !set(name) {
			continue
		}
		if prof.TLS == nil {
			prof.TLS = &envconfig.ClientConfigTLS{}
		}
		switch name {
		case "tls":
			prof.TLS.Disabled = !c.tls
		case "tls-cert-path":
			prof.TLS.ClientCertPath = c.tlsCertPath
		case "tls-key-path":
			prof.TLS.ClientKeyPath = c.tlsKeyPath
		case "tls-ca-path":
			prof.TLS.ServerCACertPath = c.tlsCAPath
		case "tls-server-name":
			prof.TLS.ServerName = c.tlsServerName
		case "tls-disable-host-verification":
			prof.TLS.DisableHostVerification = c.tlsDisableHostVerification
		}
	}
	if prof.Address == "" {
		prof.Address = DefaultAddress
	}
	if prof.Namespace == "" {
		prof.Namespace = DefaultNamespace
	}
	// A profile's codec endpoint is used, as the temporal CLI uses it: tb's
	// payloads travel through the same codec as the application's.
	return prof.ToClientOptions(envconfig.ToClientOptionsRequest{IncludeRemoteCodec: true})
}

// dial connects to Temporal, failing within timeout when it cannot be reached.
func dial(ctx context.Context, opts client.Options, timeout time.Duration, logger *slog.Logger) (client.Client, error) {
	opts.Logger = log.NewStructuredLogger(logger)
	// DialContext's first call, GetSystemInfo, sets its own deadline (5s unless
	// told otherwise), shorter than a longer timeout of ours.
	opts.ConnectionOptions.GetSystemInfoTimeout = timeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("cannot reach Temporal at %s (namespace %s): %w", opts.HostPort, opts.Namespace, err)
	}
	return c, nil
}

package devserver

// The server configuration follows go.temporal.io/server/temporaltest/internal/lite_server.go
// (SQLite persistence, namespace pre-registration, one process for all services) and the
// temporal CLI's dev server (github.com/temporalio/cli, internal/devserver/server.go) for
// static membership and dynamic config defaults.

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/membership/static"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
)

const (
	clusterName = "active"
	storeName   = "sqlite-default"
)

// newTemporalServer prepares the SQLite database (schema and namespace) and
// builds, without starting, a server with the frontend, history, matching and
// worker services.
func newTemporalServer(r *resolved) (temporal.Server, error) {
	sqlConf, err := prepareDatabase(r)
	if err != nil {
		return nil, err
	}
	conf, err := serverConfig(r, sqlConf)
	if err != nil {
		return nil, err
	}

	logger := newLogger(r.logger)
	authorizer, err := authorization.GetAuthorizerFromConfig(&conf.Global.Authorization)
	if err != nil {
		return nil, fmt.Errorf("create authorizer: %w", err)
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&conf.Global.Authorization, logger)
	if err != nil {
		return nil, fmt.Errorf("create claim mapper: %w", err)
	}

	hosts := make(map[primitives.ServiceName]static.Hosts, len(temporal.DefaultServices))
	for _, name := range temporal.DefaultServices {
		addr := hostPort{host: loopback, port: conf.Services[name].RPC.GRPCPort}
		if name == string(primitives.FrontendService) {
			addr = r.frontendDial
		}
		hosts[primitives.ServiceName(name)] = static.SingleLocalHost(addr.String())
	}

	srv, err := temporal.NewServer(
		temporal.WithConfig(conf),
		temporal.ForServices(temporal.DefaultServices),
		// A fixed membership: each service is a single host at a known address,
		// so there is no ringpop gossip and no membership ports to allocate.
		temporal.WithStaticHosts(hosts),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithDynamicConfigClient(dynamicConfig(r.dynamicConfig)),
	)
	if err != nil {
		return nil, fmt.Errorf("create temporal server: %w", err)
	}
	return srv, nil
}

// dynamicConfig returns the dynamic config values the server runs with:
// those the temporal CLI's dev server sets (minus history.enableChasm and
// activity.enableStandalone, on by default since 1.32), a higher schedule
// start rate, and the caller's overrides.
func dynamicConfig(overrides map[string]any) dynamicconfig.StaticClient {
	dc := dynamicconfig.StaticClient{
		// The default (128k entries) sizes the mutable-state cache for a
		// production history host; a dev server needs far less memory.
		dynamicconfig.HistoryCacheHostLevelMaxSize.Key(): 8096,
		// The default of 10 visibility requests per second per namespace is
		// easy to exceed with the Web UI open next to a CLI listing workflows.
		dynamicconfig.FrontendMaxNamespaceVisibilityRPSPerInstance.Key(): 100,
		// Make new search attributes and Nexus endpoints visible immediately
		// instead of after the caches' refresh interval.
		dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(): true,
		dynamicconfig.ForceNexusEndpointRefreshOnRead.Key():         true,
		// Those reads now go to the database, so raise the persistence QPS
		// limits, keeping the ratio between them that the defaults have.
		dynamicconfig.FrontendPersistenceMaxQPS.Key(): 10000,
		dynamicconfig.HistoryPersistenceMaxQPS.Key():  45000,
		// Schedules may start 30 workflows a second per namespace by default;
		// every bucket's refill is one, and buckets tick together (on the hour,
		// every second). A single-user server can afford far more.
		dynamicconfig.SchedulerNamespaceStartWorkflowRPS.Key(): 2000,
	}
	for k, v := range overrides {
		dc[dynamicconfig.MakeKey(k)] = v
	}
	return dc
}

// serverConfig builds the static configuration: SQLite for both the default
// and the visibility store, one history shard, archival off, and no metrics
// or pprof listeners (so several servers can share a process).
func serverConfig(r *resolved, sqlConf *config.SQL) (*config.Config, error) {
	var conf config.Config
	conf.Global.Membership.MaxJoinDuration = 30 * time.Second
	conf.Global.Membership.BroadcastAddress = loopback
	// conf.Global.Metrics stays nil, which selects a no-op metrics handler,
	// and conf.Global.PProf.Port stays 0, which leaves pprof off.

	conf.Persistence.DefaultStore = storeName
	conf.Persistence.VisibilityStore = storeName
	conf.Persistence.NumHistoryShards = 1
	conf.Persistence.DataStores = map[string]config.DataStore{storeName: {SQL: sqlConf}}

	conf.ClusterMetadata = &cluster.Config{
		EnableGlobalNamespace:    false,
		FailoverVersionIncrement: 10,
		MasterClusterName:        clusterName,
		CurrentClusterName:       clusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{
			clusterName: {
				Enabled:                true,
				InitialFailoverVersion: 1,
				RPCAddress:             r.frontendDial.String(),
				HTTPAddress:            hostPort{host: r.frontendDial.host, port: r.frontendHTTPPort}.String(),
			},
		},
	}
	conf.DCRedirectionPolicy.Policy = "noop"

	conf.Services = map[string]config.Service{
		string(primitives.FrontendService): {RPC: config.RPC{
			GRPCPort: r.frontend.port,
			HTTPPort: r.frontendHTTPPort,
			BindOnIP: r.frontend.host,
		}},
	}
	for _, name := range []primitives.ServiceName{
		primitives.HistoryService, primitives.MatchingService, primitives.WorkerService,
	} {
		port, err := freePort(loopback)
		if err != nil {
			return nil, fmt.Errorf("%s service: %w", name, err)
		}
		conf.Services[string(name)] = config.Service{RPC: config.RPC{GRPCPort: port, BindOnIP: loopback}}
	}

	conf.Archival.History.State = "disabled"
	conf.Archival.Visibility.State = "disabled"
	conf.NamespaceDefaults.Archival.History.State = "disabled"
	conf.NamespaceDefaults.Archival.Visibility.State = "disabled"
	// The worker service's SDK client (schedules, batch operations, ...) dials this.
	conf.PublicClient.HostPort = r.frontendDial.String()
	return &conf, nil
}

// prepareDatabase returns the SQLite store's config, creating the schema for a
// new database file, and registers the namespace if it does not exist yet.
func prepareDatabase(r *resolved) (*config.SQL, error) {
	conf := &config.SQL{PluginName: sqliteplugin.PluginName}
	if r.ephemeral {
		// A shared-cache in-memory database under a random name, so that every
		// server in the process gets its own.
		conf.ConnectAttributes = map[string]string{"mode": "memory", "cache": "shared"}
		conf.DatabaseName = "devserver-" + rand.Text()
	} else {
		conf.ConnectAttributes = map[string]string{"mode": "rwc"}
		conf.DatabaseName = r.dbFile
		if err := ensureSchema(conf); err != nil {
			return nil, err
		}
	}

	ns, err := sqliteschema.NewNamespaceConfig(clusterName, r.namespace, false, nil)
	if err != nil {
		return nil, fmt.Errorf("namespace %q: %w", r.namespace, err)
	}
	if err := sqliteschema.CreateNamespaces(conf, ns); err != nil {
		return nil, fmt.Errorf("register namespace %q: %w", r.namespace, err)
	}
	return conf, nil
}

// ensureSchema creates conf.DatabaseName with the Temporal schema unless the
// file already exists. The schema is written to a temporary file in the same
// directory which is then renamed into place, so an interrupted setup never
// leaves a half-initialized database behind.
func ensureSchema(conf *config.SQL) error {
	path := conf.DatabaseName
	switch _, err := os.Stat(path); {
	case err == nil:
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("database file: %w", err)
	}

	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create database directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".init-*")
	if err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	tmpPath := tmp.Name()
	if err := tmp.Close(); err != nil {
		return errors.Join(fmt.Errorf("create database file: %w", err), os.Remove(tmpPath))
	}

	tmpConf := *conf
	tmpConf.DatabaseName = tmpPath
	if err := sqliteschema.SetupSchema(&tmpConf); err != nil {
		return errors.Join(fmt.Errorf("set up schema in %s: %w", path, err), os.Remove(tmpPath))
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return errors.Join(fmt.Errorf("move new database into place: %w", err), os.Remove(tmpPath))
	}
	return nil
}

package cli_test

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/spf13/cobra"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"gopkg.in/yaml.v3"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/cli"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
)

// The compose file, the Dockerfile and .dockerignore live at the repository root.
const repoRoot = "../../.."

// The services docker-compose.yml must define.
var stackServices = []string{"postgresql", "temporal-schema", "temporal", "temporal-namespace", "temporal-ui", "tb-worker", "tb-sync", "prometheus", "grafana"}

// The images each non-tb service runs.
var stackImages = map[string]string{
	"postgresql":         "postgres",
	"temporal-schema":    "temporalio/admin-tools",
	"temporal":           "temporalio/server",
	"temporal-namespace": "temporalio/admin-tools",
	"temporal-ui":        "temporalio/ui",
	"prometheus":         "prom/prometheus",
	"grafana":            "grafana/grafana",
}

// The start-up order: who waits for whom, and for what.
var stackDependencies = []struct{ from, to, condition string }{
	{"temporal-schema", "postgresql", "service_healthy"},
	{"temporal", "temporal-schema", "service_completed_successfully"},
	{"temporal-namespace", "temporal", "service_healthy"},
	{"temporal-ui", "temporal", "service_healthy"},
	{"tb-worker", "temporal", "service_healthy"},
	{"tb-worker", "temporal-namespace", "service_completed_successfully"},
	{"tb-sync", "temporal", "service_healthy"},
	{"tb-sync", "temporal-namespace", "service_completed_successfully"},
	{"grafana", "prometheus", "service_started"},
}

const (
	frontendPort   = "7233"
	uiPort         = "8080"
	prometheusPort = "9090"
	grafanaPort    = "3000"
)

func readRepoFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestComposeStack checks docker-compose.yml and the Dockerfile without Docker:
// images, ports, start-up order, the Temporal server's configuration as its
// image renders it, and that every tb command line parses as tb would parse it.
func TestComposeStack(t *testing.T) {
	for _, p := range checkStack(readRepoFile(t, "docker-compose.yml"), readRepoFile(t, "Dockerfile"), repoRoot) {
		t.Error(p)
	}
}

// TestComposeCatchesMistakes breaks copies of the files in typical ways and
// expects checkStack to say what is wrong.
func TestComposeCatchesMistakes(t *testing.T) {
	compose := string(readRepoFile(t, "docker-compose.yml"))
	dockerfile := string(readRepoFile(t, "Dockerfile"))
	for _, m := range []struct {
		file, old, new, want string
	}{
		{"docker-compose.yml", `"--namespace", "default", "--metrics-address"`, `"--namepsace", "default", "--metrics-address"`, "unknown flag: --namepsace"},
		{"docker-compose.yml", `["worker",`, `["wroker",`, `unknown command "wroker"`},
		{"docker-compose.yml", `["worker",`, `["tb", "worker",`, `unknown command "tb"`},
		{"docker-compose.yml", `"sync-schedules", "--address", "temporal:7233"`, `"sync-schedules", "--address", "temporal:7234"`, `"temporal:7234"`},
		{"docker-compose.yml", `"sync-schedules", "--address", "temporal:7233"`, `"sync-schedules", "--address", "temporal"`, `"temporal"`},
		{"docker-compose.yml", `"--namespace", "default", "--config"`, `"--namespace", "prod", "--config"`, `namespace "prod"`},
		{"docker-compose.yml", `"--config", "/etc/tb/buckets.yaml"`, `"--config", "/etc/tb/buckets.yaml", "--concurrency", "many"`, `invalid argument "many"`},
		{"docker-compose.yml", `"--config", "/etc/tb/buckets.yaml"`, `"--config", "/etc/tb/buckets.yaml", "extra"`, "unknown command"},
		{"docker-compose.yml", `target: /etc/tb/buckets.yaml`, `target: /etc/tb/bucket.yaml`, "/etc/tb/buckets.yaml"},
		{"docker-compose.yml", `source: ./buckets.yaml`, `source: ./bucket.yaml`, "bucket.yaml"},
		{"docker-compose.yml", `image: temporalio/ui:2.54.1`, `image: temporalio/ui:latest`, "temporalio/ui:latest"},
		{"docker-compose.yml", `image: postgres:17`, `image: postgres`, `"postgres"`},
		{"docker-compose.yml", `image: temporalio/server:1.32.1`, `image: temporalio/auto-setup:1.29.1`, "temporalio/auto-setup"},
		{"docker-compose.yml", `image: temporalio/server:1.32.1`, `image: temporalio/server:1.31.0`, "same version"},
		{"docker-compose.yml", `- "127.0.0.1:8080:8080"`, `- "127.0.0.1:8088:8080"`, "publish port 8080"},
		{"docker-compose.yml", `- "127.0.0.1:7233:7233"`, `- "127.0.0.1:7234:7233"`, "publish port 7233"},
		{"docker-compose.yml", `- "127.0.0.1:7233:7233"`, `- "7233:7233"`, `services.temporal.ports: 7233:7233 is published on every interface`},
		{"docker-compose.yml", `- "127.0.0.1:8080:8080"`, `- "0.0.0.0:8080:8080"`, `services.temporal-ui.ports: 0.0.0.0:8080:8080 is published on every interface`},
		{"docker-compose.yml", `- "127.0.0.1:8080:8080"`, `- "[::]:8080:8080"`, `is published on every interface (host IP "::")`},
		{"docker-compose.yml", `- "127.0.0.1:8080:8080"`, "- {target: 8080, published: 8080}", `is published on every interface (host IP "")`},
		{"docker-compose.yml", "      retries: 30\n      start_period: 10s\n    restart: unless-stopped", "      retries: 30\n      start_period: 10s\n    ports: [\"5432:5432\"]\n    restart: unless-stopped", `services.postgresql.ports: 5432:5432 is published on every interface`},
		{"docker-compose.yml", `BIND_ON_IP: 0.0.0.0`, `BIND_ON_IP: 127.0.0.1`, "0.0.0.0"},
		{"docker-compose.yml", `POSTGRES_PWD: ${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD in .env}`, `POSTGRES_PWD: secret`, "user and password differ"},
		{"docker-compose.yml", `POSTGRES_PWD: ${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD in .env}`, `POSTGRES_PWD: secret`, "environment.POSTGRES_PWD: a password written in the file"},
		{"docker-compose.yml", `POSTGRES_PASSWORD: ${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD in .env}`, `POSTGRES_PASSWORD: ${TEMPORAL_DB_PASSWORD:-temporal}`, "environment.POSTGRES_PASSWORD: a password written in the file, or a default one"},
		{"docker-compose.yml", `SQL_PASSWORD: ${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD in .env}`, `SQL_PASSWORD: ${TEMPORAL_DB_PASSWORD?set TEMPORAL_DB_PASSWORD in .env}`, "environment.SQL_PASSWORD: a password written in the file, or a default one"},
		{"docker-compose.yml", `SQL_PASSWORD: ${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD in .env}`, `SQL_PASSWORD: ${TEMPORAL_DB_PASSWORD}`, "compose substitutes ${TEMPORAL_DB_PASSWORD}"},
		{"docker-compose.yml", `SQL_PASSWORD: ${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD in .env}`, `SQL_PASSWORD: ${TEMPORAL_SQL_PASSWORD:?set it}`, "SQL_USER and SQL_PASSWORD differ"},
		{"docker-compose.yml", `SQL_PASSWORD: ${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD in .env}`, `SQL_PASSWORD: ${TEMPORAL_SQL_PASSWORD:?set it}`, "requires TEMPORAL_SQL_PASSWORD, which the comments at the top of the file do not explain"},
		{"docker-compose.yml", "      POSTGRES_USER: temporal\n      POSTGRES_PASSWORD:", "      POSTGRES_USER: temporal\n      POSTGRES_INITDB_ARGS: --auth=trust\n      ADMIN_SECRET: hunter2\n      POSTGRES_PASSWORD:", "environment.ADMIN_SECRET: a password written in the file"},
		{"docker-compose.yml", `POSTGRES_SEEDS: postgresql`, `POSTGRES_SEEDS: postgres`, `"postgres:5432"`},
		{"docker-compose.yml", `--db temporal_visibility update-schema`, `--db temporal_visiblity update-schema`, "temporal_visibility"},
		{"docker-compose.yml", "tries=$$((tries + 1))\n          [ \"$$tries\" -lt 60 ]", "tries=$((tries + 1))\n          [ \"$$tries\" -lt 60 ]", "write $$"},
		{"docker-compose.yml", `--namespace default --retention`, `--namespace tb --retention`, `namespace "default"`},
		{"docker-compose.yml", `target: /etc/temporal/config/dynamicconfig/docker.yaml`, `target: /etc/temporal/dynamicconfig.yaml`, "dynamic config"},
		{"docker-compose.yml", `limit.maxIDLength:`, `limit.maxIDLenght:`, "unregistered key"},
		{"docker-compose.yml", "    restart: unless-stopped\n\n  # One-shot: create or update", "    restart: always\n\n  # One-shot: create or update", "unless-stopped"},
		{"docker-compose.yml", `- postgresql-data:/var/lib/postgresql/data`, `- /var/lib/postgresql/data`, "named volume"},
		{"docker-compose.yml", "  temporal-ui:\n    image", "  temporal-ui:\n    depend_on: [temporal]\n    image", `unknown key "depend_on"`},
		{"docker-compose.yml", "      temporal-schema:\n        condition: service_completed_successfully", "      temporal-schema:\n        condition: service_started", "service_completed_successfully"},
		{"docker-compose.yml", `image: prom/prometheus:v3.13.1`, `image: prom/prometheus:latest`, "prom/prometheus:latest"},
		{"docker-compose.yml", `image: grafana/grafana:12.4.3`, `image: grafana/grafana`, `"grafana/grafana"`},
		{"docker-compose.yml", `- "127.0.0.1:3000:3000"`, `- "3000:3000"`, "services.grafana.ports: 3000:3000 is published on every interface"},
		{"docker-compose.yml", `- "127.0.0.1:9090:9090"`, `- "127.0.0.1:9091:9090"`, "publish port 9090"},
		{"docker-compose.yml", `"--metrics-address", "0.0.0.0:9464"`, `"--metrics-address", "127.0.0.1:9464"`, "tb-worker listens on 127.0.0.1 only"},
		{"docker-compose.yml", `"--metrics-address", "0.0.0.0:9464"`, `"--metrics-address", "0.0.0.0:9465"`, "no job scrapes tb-worker:9465"},
		{"docker-compose.yml", `, "--metrics-address", "0.0.0.0:9464"]`, `]`, "serve the worker's metrics"},
		{"docker-compose.yml", `PROMETHEUS_ENDPOINT: 0.0.0.0:8000`, `PROMETHEUS_ENDPOINT: 0.0.0.0:9000`, "no job scrapes temporal:9000"},
		{"docker-compose.yml", "      # The server's metrics for Prometheus, on the compose network only.\n      PROMETHEUS_ENDPOINT: 0.0.0.0:8000\n", "", "set PROMETHEUS_ENDPOINT"},
		{"docker-compose.yml", `GF_AUTH_ANONYMOUS_ORG_ROLE: Viewer`, `GF_AUTH_ANONYMOUS_ORG_ROLE: Admin`, "GF_AUTH_ANONYMOUS_ORG_ROLE"},
		{"docker-compose.yml", `GF_SECURITY_DISABLE_INITIAL_ADMIN_CREATION: "true"`, `GF_SECURITY_DISABLE_INITIAL_ADMIN_CREATION: "false"`, "default password"},
		{"docker-compose.yml", `source: ./deploy/prometheus/prometheus.yml`, `source: ./prometheus.yml`, "prometheus.yml: no such file"},
		{"docker-compose.yml", `target: /etc/grafana/dashboards/tb`, `target: /var/lib/grafana/dashboards`, "reads /etc/grafana/dashboards/tb, which is no directory of the repository"},
		{"docker-compose.yml", `target: /etc/grafana/provisioning/datasources`, `target: /etc/grafana/datasources`, "nothing is mounted at /etc/grafana/provisioning/datasources"},
		{"docker-compose.yml", "        target: /etc/grafana/dashboards/tb\n        read_only: true", "        target: /etc/grafana/dashboards/tb", "mount /etc/grafana/dashboards/tb read-only"},
		{"docker-compose.yml", `/etc/grafana/dashboards/tb/tb.json`, `/etc/grafana/dashboards/tb/home.json`, "home.json is not a provisioned dashboard"},
		{"deploy/prometheus/prometheus.yml", `["tb-worker:9464"]`, `["tb_worker:9464"]`, `scrapes "tb_worker:9464", which is not host:port of a service`},
		{"deploy/prometheus/prometheus.yml", `["temporal:8000"]`, `["temporal:7233"]`, "no job scrapes temporal:8000"},
		{"deploy/grafana/provisioning/datasources/prometheus.yaml", `url: http://prometheus:9090`, `url: http://localhost:9090`, "want http://prometheus:9090"},
		{"deploy/grafana/provisioning/datasources/prometheus.yaml", `uid: prometheus`, `uid: prom`, `datasource uid "prometheus" is not provisioned`},
		{"deploy/grafana/provisioning/dashboards/tb.yaml", `path: /etc/grafana/dashboards/tb`, `path: /etc/grafana/dashboards`, "nothing is mounted at /etc/grafana/dashboards"},
		{"deploy/grafana/dashboards/tb.json", `"uid": "tb-buckets"`, `"uid": ""`, "needs a uid"},
		{"deploy/grafana/dashboards/tb.json", `"name": "bucket"`, `"name": "buckets"`, "a query variable named bucket"},
		{"deploy/grafana/dashboards/tb.json", `max by (bucket) (tb_bucket_tokens{bucket=~\"$bucket\"})`, `max by (bucket) (tb_bucket_tokens)`, "does not select the chosen buckets"},
		{"deploy/grafana/dashboards/tb.json", `(rate(tb_bucket_refill_lag_seconds_bucket{`, `(rate(tb_bucket_refill_lag_bucket{`, "no dashboard shows refill lag"},
		{"deploy/grafana/dashboards/tb.json", `max by (bucket) (tb_bucket_tokens{bucket=~\"$bucket\"})`, `max by (bucket) (tb_bucket_tokens{bucket=~\"$bucket\"}`, "unclosed bracket"},
		{"Dockerfile", `ENTRYPOINT ["/tb"]`, `ENTRYPOINT ["/bin/tb"]`, "ENTRYPOINT"},
		{"Dockerfile", `ENTRYPOINT ["/tb"]`, `ENTRYPOINT /tb`, "exec form"},
		{"Dockerfile", `-o /tb ./cmd/tb`, `-o /tb ./cmd/tb/...`, "./cmd/tb"},
		{"Dockerfile", `CGO_ENABLED=0 go build`, `go build`, "CGO_ENABLED=0"},
		{"Dockerfile", `FROM golang:1.26 AS build`, `FROM golang AS build`, "pinned"},
		{"Dockerfile", `FROM golang:1.26 AS build`, `FROM golang:1.22 AS build`, "go.mod"},
		{"Dockerfile", "COPY go.mod go.sum go.work go.work.sum ./\nCOPY cmd/go.mod cmd/go.sum ./cmd/\nRUN go mod download\n", "", "go mod download"},
		{"Dockerfile", "COPY cmd/go.mod cmd/go.sum ./cmd/\n", "", "COPY cmd/go.mod"},
		{"Dockerfile", "COPY go.mod go.sum go.work go.work.sum ./", "COPY go.mod go.sum ./", "COPY go.work"},
		{"Dockerfile", `FROM gcr.io/distroless/static-debian12:nonroot`, `FROM ubuntu:24.04`, "distroless"},
	} {
		t.Run(m.file+": "+m.want, func(t *testing.T) {
			c, d := compose, dockerfile
			other := ""
			target := &c
			switch m.file {
			case "Dockerfile":
				target = &d
			case "docker-compose.yml":
			default: // a file the stack mounts
				other = string(readRepoFile(t, m.file))
				target = &other
			}
			if n := strings.Count(*target, m.old); n != 1 {
				t.Fatalf("%s contains %q %d times, want once: update this case to the file", m.file, m.old, n)
			}
			*target = strings.Replace(*target, m.old, m.new, 1)
			var files map[string][]byte
			if other != "" {
				files = map[string][]byte{m.file: []byte(other)}
			}
			problems := inspectStack([]byte(c), []byte(d), repoRoot, files).unique()
			for _, p := range problems {
				if strings.Contains(p, m.want) {
					return
				}
			}
			t.Errorf("replacing %q with %q in %s: want a problem mentioning %q, got:\n%s", m.old, m.new, m.file, m.want, strings.Join(problems, "\n"))
		})
	}
}

// stack is what checkStack learns, and the problems it found.
type stack struct {
	root     string
	files    map[string][]byte // files of the repository read in place of the real ones
	doc      composeDoc
	header   string            // the comments the file starts with
	required map[string]string // variables the file requires (${VAR:?message}) → where first
	problems []string
	// dashboards are the Grafana dashboards the stack provisions.
	dashboards []dashboard
}

// services returns the names of the compose file's services, sorted.
func (s *stack) services() []string {
	names := make([]string, 0, len(s.doc.Services))
	for name := range s.doc.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func (s *stack) errorf(format string, args ...any) {
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

// checkStack returns what is wrong with a compose file and Dockerfile whose
// build context (and .dockerignore) is root.
func checkStack(composeYAML, dockerfile []byte, root string) []string {
	return inspectStack(composeYAML, dockerfile, root, nil).unique()
}

// inspectStack checks a compose file and Dockerfile whose build context is
// root, reading the repository's files from files (by path in the
// repository) when there, else from root.
func inspectStack(composeYAML, dockerfile []byte, root string, files map[string][]byte) *stack {
	s := &stack{root: root, files: files, header: leadingComments(string(composeYAML)), required: map[string]string{}}
	var node yaml.Node
	if err := yaml.Unmarshal(composeYAML, &node); err != nil {
		s.errorf("docker-compose.yml: %v", err)
		return s
	}
	s.walk(&node, nil)
	s.checkRequired()
	if err := node.Decode(&s.doc); err != nil {
		s.errorf("docker-compose.yml: %v", err)
		return s
	}
	complete := true
	for _, name := range stackServices {
		if s.doc.Services[name] == nil {
			s.errorf("docker-compose.yml: no service %q (want %s)", name, strings.Join(stackServices, ", "))
			complete = false
		}
	}
	if complete {
		s.checkImages()
		s.checkPorts()
		s.checkDependencies()
		s.checkPostgres()
		s.checkServer()
		s.checkTB()
		s.checkPrometheus()
		s.checkGrafana()
	}
	s.checkDockerfile(string(dockerfile))
	s.checkDockerignore()
	return s
}

// unique returns the problems found, each once, in the order found.
func (s *stack) unique() []string {
	var unique []string
	seen := map[string]bool{}
	for _, p := range s.problems {
		if !seen[p] {
			seen[p] = true
			unique = append(unique, p)
		}
	}
	return unique
}

// Keys the Compose specification allows at the top level and in a service.
var (
	topLevelKeys = keySet("version name services networks volumes configs secrets include models")
	serviceKeys  = keySet(`annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
		container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares cpus cpuset
		credential_spec depends_on deploy develop device_cgroup_rules devices dns dns_opt dns_search domainname
		driver_opts entrypoint env_file environment expose extends external_links extra_hosts gpus group_add
		healthcheck hostname image init ipc isolation label_file labels links logging mac_address mem_limit
		mem_reservation mem_swappiness memswap_limit models network_mode networks oom_kill_disable oom_score_adj pid
		pids_limit platform ports post_start pre_stop privileged profiles provider pull_policy read_only restart
		runtime scale secrets security_opt shm_size stdin_open stop_grace_period stop_signal storage_opt sysctls
		tmpfs tty ulimits use_api_socket user userns_mode uts volumes volumes_from working_dir`)
)

func keySet(s string) map[string]bool {
	m := map[string]bool{}
	for _, k := range strings.Fields(s) {
		m[k] = true
	}
	return m
}

// walk reports unknown keys and variables compose would substitute, and
// replaces each value with what compose makes of it (variables unset).
func (s *stack) walk(n *yaml.Node, path []string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			s.walk(c, path)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			p := append(path[:len(path):len(path)], key)
			switch {
			case strings.HasPrefix(key, "x-"):
			case len(p) == 1 && !topLevelKeys[key]:
				s.errorf("docker-compose.yml: unknown key %q at the top level", key)
			case len(p) == 3 && p[0] == "services" && !serviceKeys[key]:
				s.errorf("docker-compose.yml: services.%s: unknown key %q", p[1], key)
			}
			s.walk(n.Content[i+1], p)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			s.walk(c, append(path[:len(path):len(path)], strconv.Itoa(i)))
		}
	case yaml.ScalarNode:
		where := strings.Join(path, ".")
		s.checkSecret(path, n.Value)
		v, unset, required := interpolate(n.Value)
		for _, u := range unset {
			if u == "$" {
				s.errorf("docker-compose.yml: %s: compose rejects a lone $: write $$ for a literal $", where)
			} else {
				s.errorf("docker-compose.yml: %s: compose substitutes %s from the environment (empty when unset): write $$ for a literal $, ${VAR:-default}, or ${VAR:?message} for a value the user must set", where, u)
			}
		}
		for _, name := range required {
			if _, seen := s.required[name]; !seen {
				s.required[name] = where
			}
		}
		n.Value = v
	}
}

var (
	variable     = regexp.MustCompile(`\$(?:\$|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*)|)`)
	withFallback = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(:?-|:?\+)(.*)$`)
	// ${VAR:?message} (unset or empty) and ${VAR?message} (unset): compose refuses to start.
	requiredVar = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)(:?\?)(.*)$`)
)

// interpolate does compose's variable substitution with every variable unset,
// returning the result, the references that would come out empty (a lone
// "$", which compose rejects, among them), and the variables compose refuses
// to start without. Those the user sets: each becomes requiredValue(name).
func interpolate(v string) (out string, unset, required []string) {
	out = variable.ReplaceAllStringFunc(v, func(ref string) string {
		if ref == "$$" {
			return "$"
		}
		if m := variable.FindStringSubmatch(ref); m[1] != "" {
			if f := withFallback.FindStringSubmatch(m[1]); f != nil {
				if strings.HasSuffix(f[1], "-") {
					return f[2]
				}
				return "" // ${VAR:+alternative}: VAR is unset
			}
			if r := requiredVar.FindStringSubmatch(m[1]); r != nil {
				required = append(required, r[1])
				return requiredValue(r[1])
			}
		}
		unset = append(unset, ref)
		return ""
	})
	return out, unset, required
}

// requiredValue stands for the value a user gives a required variable.
func requiredValue(name string) string { return "value-of-" + name }

// secretKey matches environment variables holding a password or secret.
var secretKey = regexp.MustCompile(`(?i)(passw|pwd|secret)`)

// mustSet matches a value compose takes from a variable it refuses to start
// without, empty or unset: ${VAR:?message}.
var mustSet = regexp.MustCompile(`^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}$`)

// checkSecret refuses a password with a value written in the file, or a
// default one: whoever runs the stack as it is would ship it.
func (s *stack) checkSecret(path []string, raw string) {
	if len(path) != 4 || path[0] != "services" || path[2] != "environment" {
		return
	}
	key, value := path[3], raw
	if _, err := strconv.Atoi(key); err == nil { // the list form, KEY=value
		key, value, _ = strings.Cut(raw, "=")
	}
	if secretKey.MatchString(key) && !mustSet.MatchString(value) {
		s.errorf("docker-compose.yml: services.%s.environment.%s: a password written in the file, or a default one, ships with every copy of it: take it from a variable the user must set, ${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD in .env}", path[1], key)
	}
}

// checkRequired checks that the file's header tells the user about every
// variable compose refuses to start without, and that .env, where they go,
// stays out of the image's build context.
func (s *stack) checkRequired() {
	names := make([]string, 0, len(s.required))
	for name := range s.required {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !strings.Contains(s.header, name) {
			s.errorf("docker-compose.yml: %s requires %s, which the comments at the top of the file do not explain how to set", s.required[name], name)
		}
	}
}

// leadingComments returns the comment lines a file starts with.
func leadingComments(text string) string {
	var b strings.Builder
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

type composeDoc struct {
	Services map[string]*service `yaml:"services"`
	Volumes  map[string]any      `yaml:"volumes"`
	Configs  map[string]struct {
		Content *string `yaml:"content"`
		File    string  `yaml:"file"`
	} `yaml:"configs"`
}

type service struct {
	Image       string       `yaml:"image"`
	Build       *buildSpec   `yaml:"build"`
	Entrypoint  commandLine  `yaml:"entrypoint"`
	Command     commandLine  `yaml:"command"`
	Environment environment  `yaml:"environment"`
	Ports       []port       `yaml:"ports"`
	Volumes     []volume     `yaml:"volumes"`
	Configs     []configRef  `yaml:"configs"`
	DependsOn   dependencies `yaml:"depends_on"`
	Healthcheck *struct {
		Test    commandLine `yaml:"test"`
		Disable bool        `yaml:"disable"`
	} `yaml:"healthcheck"`
	Restart string `yaml:"restart"`
}

// fields returns a mapping node's scalar values by key.
func fields(n *yaml.Node) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if v := n.Content[i+1]; v.Kind == yaml.ScalarNode {
			m[n.Content[i].Value] = v.Value
		}
	}
	return m
}

type buildSpec struct{ context, dockerfile string }

func (b *buildSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		b.context = n.Value
		return nil
	}
	f := fields(n)
	b.context, b.dockerfile = f["context"], f["dockerfile"]
	return nil
}

// commandLine is a command, entrypoint or healthcheck test: a YAML list, or a
// string that compose splits like a shell would.
type commandLine struct {
	args   []string
	isList bool
}

func (c *commandLine) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		c.args = []string{n.Value}
		return nil
	}
	c.isList = true
	return n.Decode(&c.args)
}

func (c commandLine) String() string { return strings.Join(c.args, " ") }

type environment map[string]string

func (e *environment) UnmarshalYAML(n *yaml.Node) error {
	*e = environment{}
	if n.Kind == yaml.MappingNode {
		for k, v := range fields(n) {
			(*e)[k] = v
		}
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	for _, kv := range list {
		k, v, _ := strings.Cut(kv, "=")
		(*e)[k] = v
	}
	return nil
}

// port is a published port: [host_ip:][published:]target[/protocol], or the long form.
type port struct{ hostIP, published, target, text string }

func (p *port) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		f := fields(n)
		p.hostIP, p.published, p.target = f["host_ip"], f["published"], f["target"]
		p.text = fmt.Sprintf("{host_ip: %q, published: %q, target: %q}", p.hostIP, p.published, p.target)
		return nil
	}
	p.text = n.Value
	spec, _, _ := strings.Cut(n.Value, "/") // drop /tcp
	i := strings.LastIndex(spec, ":")
	p.target = spec[i+1:]
	if i >= 0 {
		host := spec[:i]
		j := strings.LastIndex(host, ":")
		p.published = host[j+1:]
		if j >= 0 {
			p.hostIP = strings.Trim(host[:j], "[]")
		}
	}
	return nil
}

// loopback reports whether a port is published on the loopback interface only.
func (p port) loopback() bool {
	ip := net.ParseIP(p.hostIP)
	return ip != nil && ip.IsLoopback()
}

type volume struct {
	source, target string
	readOnly       bool
}

func (v *volume) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		f := fields(n)
		v.source, v.target, v.readOnly = f["source"], f["target"], f["read_only"] == "true"
		return nil
	}
	parts := strings.Split(n.Value, ":")
	switch len(parts) {
	case 1:
		v.target = parts[0]
	default:
		v.source, v.target = parts[0], parts[1]
		v.readOnly = len(parts) > 2 && strings.Contains(parts[2], "ro")
	}
	return nil
}

type configRef struct{ source, target string }

func (c *configRef) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		c.source = n.Value
	} else {
		f := fields(n)
		c.source, c.target = f["source"], f["target"]
	}
	if c.target == "" {
		c.target = "/" + c.source
	}
	return nil
}

// dependencies maps each service depended on to the condition waited for.
type dependencies map[string]string

func (d *dependencies) UnmarshalYAML(n *yaml.Node) error {
	*d = dependencies{}
	if n.Kind == yaml.SequenceNode {
		var names []string
		if err := n.Decode(&names); err != nil {
			return err
		}
		for _, name := range names {
			(*d)[name] = "service_started"
		}
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		cond := fields(n.Content[i+1])["condition"]
		if cond == "" {
			cond = "service_started"
		}
		(*d)[n.Content[i].Value] = cond
	}
	return nil
}

var officialImage = regexp.MustCompile(`^(postgres|temporalio/(?:server|admin-tools|ui)|prom/prometheus|grafana/grafana):(v?[0-9][A-Za-z0-9._-]*)(@sha256:[0-9a-f]{64})?$`)

func (s *stack) checkImages() {
	tags := map[string]string{}
	for _, name := range s.services() {
		svc := s.doc.Services[name]
		if svc.Build != nil {
			continue // tb, built from the Dockerfile
		}
		m := officialImage.FindStringSubmatch(svc.Image)
		if m == nil {
			s.errorf("services.%s.image %q: want an official image pinned to a version (postgres:<version>, temporalio/server|admin-tools|ui:<version>, prom/prometheus:v<version>, grafana/grafana:<version>), not latest or untagged", name, svc.Image)
			continue
		}
		if want, ok := stackImages[name]; ok && m[1] != want {
			s.errorf("services.%s.image %q: want %s:<version>", name, svc.Image, want)
		}
		tags[m[1]] = m[2]
	}
	server, tools := tags["temporalio/server"], tags["temporalio/admin-tools"]
	if server != "" && tools != "" && server != tools {
		s.errorf("temporalio/server:%s and temporalio/admin-tools:%s: keep them on the same version, so the schema admin-tools installs is the one the server expects", server, tools)
	}
	if server != "" && compareVersions(server, "1.30") < 0 {
		s.errorf("temporalio/server:%s: this setup relies on the configuration template built into temporalio/server 1.30 and later", server)
	}
}

func (s *stack) checkPorts() {
	for _, want := range []struct{ service, port string }{{"temporal", frontendPort}, {"temporal-ui", uiPort}, {"prometheus", prometheusPort}, {"grafana", grafanaPort}} {
		found := false
		for _, p := range s.doc.Services[want.service].Ports {
			found = found || (p.target == want.port && p.published == want.port)
		}
		if !found {
			s.errorf("services.%s.ports: want it to publish port %s (\"127.0.0.1:%s:%s\")", want.service, want.port, want.port, want.port)
		}
	}
	// Temporal here has no authorizer and the UI no login: what is published
	// must be reachable from this machine only.
	for _, name := range s.services() {
		for _, p := range s.doc.Services[name].Ports {
			if !p.loopback() {
				s.errorf("services.%s.ports: %s is published on every interface (host IP %q): bind it to 127.0.0.1, as in \"127.0.0.1:%s:%s\", and put TLS and authentication in front to expose it", name, p.text, p.hostIP, cmp.Or(p.published, p.target), p.target)
			}
		}
	}
}

func (s *stack) checkDependencies() {
	for _, name := range s.services() {
		for dep, cond := range s.doc.Services[name].DependsOn {
			target := s.doc.Services[dep]
			switch {
			case target == nil:
				s.errorf("services.%s.depends_on: no service %q", name, dep)
			case cond == "service_healthy" && (target.Healthcheck == nil || target.Healthcheck.Disable || len(target.Healthcheck.Test.args) == 0):
				s.errorf("services.%s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
			case cond == "service_completed_successfully" && target.Restart != "" && target.Restart != "no" && !strings.HasPrefix(target.Restart, "on-failure"):
				s.errorf("services.%s waits for %s to complete, but %s has restart: %s", name, dep, dep, target.Restart)
			}
		}
	}
	for _, d := range stackDependencies {
		if got := s.doc.Services[d.from].DependsOn[d.to]; got != d.condition {
			s.errorf("services.%s.depends_on: want %s with condition %s, got %q", d.from, d.to, d.condition, got)
		}
	}
	// Compose refuses a cycle; find it here.
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, path []string)
	visit = func(name string, path []string) {
		switch state[name] {
		case 1:
			s.errorf("depends_on cycle: %s", strings.Join(append(path, name), " -> "))
			return
		case 2:
			return
		}
		state[name] = 1
		if svc := s.doc.Services[name]; svc != nil {
			for dep := range svc.DependsOn {
				visit(dep, append(path, name))
			}
		}
		state[name] = 2
	}
	for _, name := range s.services() {
		visit(name, nil)
	}
	for name, want := range map[string]string{"tb-worker": "unless-stopped", "tb-sync": "no"} {
		if got := s.doc.Services[name].Restart; got != want {
			s.errorf("services.%s.restart: want %q, got %q", name, want, got)
		}
	}
}

func (s *stack) checkPostgres() {
	pg := s.doc.Services["postgresql"]
	dataDir := "/var/lib/postgresql/data"
	if m := officialImage.FindStringSubmatch(pg.Image); m != nil && compareVersions(m[2], "18") >= 0 {
		dataDir = "/var/lib/postgresql" // the postgres:18 images keep PGDATA in a versioned directory below it
	}
	for _, v := range pg.Volumes {
		if _, named := s.doc.Volumes[v.source]; named && v.target == dataDir {
			return
		}
	}
	s.errorf("services.postgresql.volumes: keep the database on a named volume (declared under top-level volumes:) mounted at %s", dataDir)
}

// renderServer renders the configuration template built into the Temporal
// server (of the go.temporal.io/server version in go.mod) with the given
// environment, as the temporalio/server image does at start.
func renderServer(env map[string]string) (*config.Config, error) {
	keys := []string{
		"DB", "DB_PORT", "DBNAME", "VISIBILITY_DBNAME", "POSTGRES_SEEDS", "POSTGRES_USER", "POSTGRES_PWD",
		"VISIBILITY_POSTGRES_SEEDS", "VISIBILITY_POSTGRES_USER", "VISIBILITY_POSTGRES_PWD", "VISIBILITY_DB_PORT",
		"ENABLE_ES", "BIND_ON_IP", "FRONTEND_GRPC_PORT", "DYNAMIC_CONFIG_FILE_PATH",
	}
	for k := range env {
		keys = append(keys, k)
	}
	for _, k := range keys {
		old, had := os.LookupEnv(k)
		os.Setenv(k, env[k])
		if had {
			defer os.Setenv(k, old)
		} else {
			defer os.Unsetenv(k)
		}
	}
	out := log.Writer()
	log.SetOutput(io.Discard)
	defer log.SetOutput(out)
	return config.Load(config.WithEmbedded())
}

func (s *stack) checkServer() {
	temporal := s.doc.Services["temporal"]
	cfg, err := renderServer(temporal.Environment)
	if err != nil {
		s.errorf("services.temporal.environment: the server would not start: %v", err)
		return
	}

	pg := s.doc.Services["postgresql"]
	schema := s.doc.Services["temporal-schema"]
	script := schema.Entrypoint.String() + "\n" + schema.Command.String()
	for _, store := range []struct{ name, schemaDir string }{
		{cfg.Persistence.DefaultStore, "temporal"},
		{cfg.Persistence.VisibilityStore, "visibility"},
	} {
		sql := cfg.Persistence.DataStores[store.name].SQL
		if sql == nil || !strings.HasPrefix(sql.PluginName, "postgres") {
			s.errorf("services.temporal.environment: the %s store is not on PostgreSQL (set DB=postgres12)", store.name)
			continue
		}
		where := fmt.Sprintf("services.temporal.environment: %s store", store.name)
		host, dbPort, _ := net.SplitHostPort(sql.ConnectAddr)
		if s.doc.Services[host] != pg || dbPort != "5432" {
			s.errorf("%s connects to %q, want postgresql:5432", where, sql.ConnectAddr)
		}
		if sql.User != pg.Environment["POSTGRES_USER"] || sql.Password != pg.Environment["POSTGRES_PASSWORD"] {
			s.errorf("%s: user and password differ from postgresql's POSTGRES_USER and POSTGRES_PASSWORD", where)
		}
		env := schema.Environment
		if env["SQL_PLUGIN"] != sql.PluginName || env["SQL_HOST"] != host || env["SQL_PORT"] != dbPort {
			s.errorf("services.temporal-schema.environment: SQL_PLUGIN, SQL_HOST, SQL_PORT = %q, %q, %q; the server uses %q at %s", env["SQL_PLUGIN"], env["SQL_HOST"], env["SQL_PORT"], sql.PluginName, sql.ConnectAddr)
		}
		if env["SQL_USER"] != sql.User || env["SQL_PASSWORD"] != sql.Password {
			s.errorf("services.temporal-schema.environment: SQL_USER and SQL_PASSWORD differ from the server's database user and password")
		}
		db := regexp.QuoteMeta(sql.DatabaseName)
		for _, step := range []struct{ name, pattern string }{
			{"create", `--db[ =]` + db + ` (create|create-database)\b`},
			{"setup-schema", `--db[ =]` + db + ` (setup-schema|setup)\b`},
			{"update-schema", `--db[ =]` + db + ` (update-schema|update) .*-d[ =]?/etc/temporal/schema/postgresql/v12/` + store.schemaDir + `/versioned\b`},
		} {
			if !regexp.MustCompile(step.pattern).MatchString(script) {
				s.errorf("services.temporal-schema: want `temporal-sql-tool --db %s %s` for the server's %s database (schema %s)", sql.DatabaseName, step.name, store.name, store.schemaDir)
			}
		}
	}

	frontend := cfg.Services["frontend"].RPC
	if strconv.Itoa(frontend.GRPCPort) != frontendPort {
		s.errorf("services.temporal.environment: frontend listens on %d, want %s", frontend.GRPCPort, frontendPort)
	}
	if frontend.BindOnIP != "0.0.0.0" {
		s.errorf("services.temporal.environment: BIND_ON_IP is %q: set it to 0.0.0.0 so the published port and the healthcheck on 127.0.0.1 reach the frontend", frontend.BindOnIP)
	}
	if hc := temporal.Healthcheck; hc == nil || !strings.Contains(hc.Test.String(), frontendPort) {
		s.errorf("services.temporal.healthcheck: probe the frontend port %s, which dependents wait on", frontendPort)
	}

	path := cfg.DynamicConfigClient.Filepath
	for _, ref := range temporal.Configs {
		if ref.target != path {
			continue
		}
		def, ok := s.doc.Configs[ref.source]
		if !ok || def.Content == nil {
			s.errorf("services.temporal.configs: %q needs a top-level config with inline content", ref.source)
			return
		}
		loaded := dynamicconfig.LoadYamlFile([]byte(*def.Content))
		for _, e := range append(loaded.Errors, loaded.Warnings...) {
			s.errorf("configs.%s (Temporal dynamic config): %v", ref.source, e)
		}
		return
	}
	s.errorf("services.temporal: the server would not start: nothing mounts its dynamic config file %s (DYNAMIC_CONFIG_FILE_PATH)", path)
}

// parseTB parses args as the tb binary parses its command line, without running anything.
func parseTB(args []string) (*cobra.Command, error) {
	root := cli.NewCommand(cli.IO{Out: io.Discard, Err: io.Discard})
	cmd, rest, err := root.Find(args)
	if err != nil {
		return nil, err
	}
	if cmd == root {
		return nil, errors.New("no tb command")
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return nil, err
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return nil, err
	}
	if err := root.PersistentPreRunE(cmd, cmd.Flags().Args()); err != nil {
		return nil, err
	}
	return cmd, nil
}

// setting returns a connection setting as tb resolves it: the flag, else the
// environment variable, else the default.
func setting(cmd *cobra.Command, flag string, env environment, envVar, def string) string {
	if cmd.Flags().Changed(flag) {
		v, _ := cmd.Flags().GetString(flag)
		return v
	}
	if v, ok := env[envVar]; ok && v != "" {
		return v
	}
	return def
}

// checkAddress checks that address reaches the temporal service's frontend.
func (s *stack) checkAddress(where, address string) {
	host, p, err := net.SplitHostPort(address)
	if err != nil || host != "temporal" || p != frontendPort {
		s.errorf("%s: address %q: want temporal:%s, the frontend of the temporal service", where, address, frontendPort)
	}
}

func (s *stack) checkTB() {
	s.checkAddress("services.temporal-ui.environment.TEMPORAL_ADDRESS", s.doc.Services["temporal-ui"].Environment["TEMPORAL_ADDRESS"])
	ns := s.doc.Services["temporal-namespace"]
	nsScript := ns.Entrypoint.String() + "\n" + ns.Command.String()
	if a := ns.Environment["TEMPORAL_ADDRESS"]; a != "" || !strings.Contains(nsScript, "--address") {
		s.checkAddress("services.temporal-namespace.environment.TEMPORAL_ADDRESS", a)
	}

	roles := map[string]string{"tb-worker": "worker", "tb-sync": "sync-schedules"}
	taskQueues := map[string]string{}
	for _, name := range s.services() {
		svc := s.doc.Services[name]
		if svc.Build == nil {
			continue
		}
		where := "services." + name
		context := svc.Build.context
		if context == "" {
			context = "."
		}
		dockerfile := svc.Build.dockerfile
		if dockerfile == "" {
			dockerfile = "Dockerfile"
		}
		if filepath.Join(s.root, context, dockerfile) != filepath.Join(s.root, "Dockerfile") {
			s.errorf("%s.build: want the repository's Dockerfile (context: ., dockerfile: Dockerfile), got context %q, dockerfile %q", where, context, dockerfile)
		}
		if svc.Entrypoint.args != nil {
			s.errorf("%s.entrypoint: leave the image's entrypoint (/tb) alone; put tb's arguments in command", where)
		}
		if !svc.Command.isList {
			s.errorf("%s.command: give tb's arguments as a YAML list", where)
			continue
		}
		cmd, err := parseTB(svc.Command.args)
		if err != nil {
			s.errorf("%s.command %q is not a tb command line: %v", where, svc.Command.args, err)
			continue
		}
		if want := roles[name]; want != "" && cmd.Name() != want {
			s.errorf("%s.command: want `tb %s ...`, got `tb %s`", where, want, cmd.Name())
		}
		s.checkAddress(where+".command", setting(cmd, "address", svc.Environment, "TEMPORAL_ADDRESS", cli.DefaultAddress))
		namespace := setting(cmd, "namespace", svc.Environment, "TEMPORAL_NAMESPACE", cli.DefaultNamespace)
		create := regexp.MustCompile(`namespace create\b.*(--namespace|-n)[ =]` + regexp.QuoteMeta(namespace) + `(\s|$)`)
		if !create.MatchString(nsScript) {
			s.errorf("%s uses namespace %q, which services.temporal-namespace does not create", where, namespace)
		}
		if cmd.Flags().Lookup("task-queue") != nil {
			taskQueues[name], _ = cmd.Flags().GetString("task-queue")
		}
		if cmd.Name() == "sync-schedules" || cmd.Name() == "validate" || cmd.Flags().Changed("config") {
			path, _ := cmd.Flags().GetString("config")
			s.checkBucketsMount(name, svc, path)
		}
	}
	w, workerOK := taskQueues["tb-worker"]
	if q, syncOK := taskQueues["tb-sync"]; workerOK && syncOK && q != w {
		s.errorf("tb-sync schedules refills on task queue %q but tb-worker polls %q", q, w)
	}
}

// checkBucketsMount checks that the buckets file a tb service reads is a valid
// file of the repository, mounted read-only.
func (s *stack) checkBucketsMount(name string, svc *service, path string) {
	for _, v := range svc.Volumes {
		if v.target != path {
			continue
		}
		if !strings.HasPrefix(v.source, ".") {
			s.errorf("services.%s.volumes: mount a file of this directory at %s, not %q", name, path, v.source)
			return
		}
		if !v.readOnly {
			s.errorf("services.%s.volumes: mount %s read-only", name, path)
		}
		if _, err := bucket.Load(filepath.Join(s.root, v.source)); err != nil {
			s.errorf("services.%s.volumes: %s: %v", name, v.source, err)
		}
		return
	}
	s.errorf("services.%s: tb reads --config %s, but no volume is mounted there (want ./buckets.yaml mounted at that path)", name, path)
}

type instruction struct {
	keyword, args string
}

type buildStage struct {
	image, name  string
	instructions []instruction
}

// parseDockerfile splits a Dockerfile into stages of instructions.
func parseDockerfile(text string) []*buildStage {
	var stages []*buildStage
	var lines []string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		if s := strings.TrimSpace(cur.String()); s != "" {
			lines = append(lines, s)
		}
		cur.Reset()
	}
	for _, line := range lines {
		keyword, args, _ := strings.Cut(line, " ")
		keyword, args = strings.ToUpper(keyword), strings.TrimSpace(args)
		if keyword == "FROM" {
			st := &buildStage{}
			for _, f := range strings.Fields(args) {
				switch {
				case strings.HasPrefix(f, "--"):
				case st.image == "":
					st.image = f
				case strings.EqualFold(f, "AS"):
				default:
					st.name = f
				}
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) > 0 {
			last := stages[len(stages)-1]
			last.instructions = append(last.instructions, instruction{keyword, args})
		}
	}
	return stages
}

func (s *stack) checkDockerfile(text string) {
	stages := parseDockerfile(text)
	if len(stages) < 2 {
		s.errorf("Dockerfile: want a multi-stage build (a golang build stage and a minimal final stage), got %d stage(s)", len(stages))
		return
	}
	names := map[string]bool{}
	for i, st := range stages {
		if _, tag := splitImage(st.image); !names[st.image] && (tag == "" || tag == "latest") {
			s.errorf("Dockerfile: FROM %s: want an image pinned to a version", st.image)
		}
		names[st.name], names[strconv.Itoa(i)] = true, true
	}

	// The build stage: the one running `go build`.
	var build *buildStage
	var buildIndex int
	var output string
	for i, st := range stages[:len(stages)-1] {
		for _, in := range st.instructions {
			if in.keyword != "RUN" || !strings.Contains(in.args, "go build") {
				continue
			}
			build, buildIndex = st, i
			fields := strings.Fields(in.args)
			for j, f := range fields {
				if f == "-o" && j+1 < len(fields) {
					output = fields[j+1]
				}
			}
			if !containsWord(fields, "./cmd/tb") {
				s.errorf("Dockerfile: the build stage must build ./cmd/tb: RUN %s", in.args)
			}
			if !containsWord(fields, "CGO_ENABLED=0") {
				s.errorf("Dockerfile: build with CGO_ENABLED=0 for a static binary that runs on distroless/static: RUN %s", in.args)
			}
			if output == "" {
				s.errorf("Dockerfile: name the binary with -o: RUN %s", in.args)
			}
		}
	}
	if build == nil {
		s.errorf("Dockerfile: no build stage runs `go build`")
		return
	}
	repo, tag := splitImage(build.image)
	if repo != "golang" {
		s.errorf("Dockerfile: build on the official golang image, not %s", build.image)
	} else if need := goModVersion(s.root); need != "" && tag != "" && tag != "latest" && !goImageSatisfies(tag, need) {
		s.errorf("Dockerfile: FROM %s: go.mod needs go %s (the golang images set GOTOOLCHAIN=local)", build.image, need)
	}
	// go.mod and go.sum first, then `go mod download`, then the sources: the
	// module layer stays cached while only code changes.
	modules, download, sources := -1, -1, -1
	for i, in := range build.instructions {
		switch {
		case in.keyword == "COPY" && strings.Contains(in.args, "go.mod") && strings.Contains(in.args, "go.sum") && modules < 0:
			modules = i
		case in.keyword == "RUN" && strings.Contains(in.args, "go mod download") && download < 0:
			download = i
		case in.keyword == "COPY" && sources < 0 && containsWord(strings.Fields(in.args), "."):
			sources = i
		}
	}
	if modules < 0 || download < modules || sources < download {
		s.errorf("Dockerfile: COPY go.mod go.sum, RUN go mod download, then COPY the sources, so the modules layer is cached")
	}
	// The command builds in the workspace: every module file must be there
	// before `go mod download`, or it downloads for the wrong graph.
	if download >= 0 {
		copied := map[string]bool{}
		for _, in := range build.instructions[:download] {
			if in.keyword == "COPY" {
				fields := strings.Fields(in.args)
				for _, f := range fields[:max(0, len(fields)-1)] {
					copied[f] = true
				}
			}
		}
		for _, f := range []string{"go.mod", "go.sum", "go.work", "go.work.sum", "cmd/go.mod", "cmd/go.sum"} {
			if !copied[f] {
				s.errorf("Dockerfile: COPY %s before `go mod download`: the command builds in the workspace of go.work", f)
			}
		}
	}

	final := stages[len(stages)-1]
	if !strings.HasPrefix(final.image, "gcr.io/distroless/static") {
		s.errorf("Dockerfile: the final stage should be a minimal official image for a static binary (gcr.io/distroless/static-debian12:nonroot), not %s", final.image)
	}
	dest, entrypoint, user := "", "", ""
	for _, in := range final.instructions {
		switch in.keyword {
		case "COPY":
			f := strings.Fields(in.args)
			from := "--from=" + build.name
			if (containsWord(f, from) || containsWord(f, "--from="+strconv.Itoa(buildIndex))) && len(f) >= 3 && f[len(f)-2] == output {
				dest = f[len(f)-1]
			}
		case "ENTRYPOINT":
			entrypoint = in.args
		case "USER":
			user = in.args
		}
	}
	if dest == "" {
		s.errorf("Dockerfile: the final stage must COPY --from=%s %s", build.name, output)
	}
	var exec []string
	if err := yaml.Unmarshal([]byte(entrypoint), &exec); err != nil || !strings.HasPrefix(entrypoint, "[") {
		s.errorf("Dockerfile: ENTRYPOINT %s: use the exec form, [\"/tb\"], so tb gets signals and compose's command becomes its arguments", entrypoint)
	} else if len(exec) != 1 || exec[0] != dest || dest != "/tb" {
		s.errorf("Dockerfile: ENTRYPOINT %s: want [\"/tb\"], the binary built from ./cmd/tb", entrypoint)
	}
	if (user == "" && !strings.HasSuffix(final.image, ":nonroot")) || user == "root" || user == "0" || strings.HasPrefix(user, "0:") || strings.HasPrefix(user, "root:") {
		s.errorf("Dockerfile: run tb as a non-root user")
	}
	if main, err := os.ReadFile(filepath.Join(s.root, "cmd", "tb", "main.go")); err != nil || !strings.Contains(string(main), "package main") {
		s.errorf("Dockerfile builds ./cmd/tb, but cmd/tb/main.go is not a main package (%v)", err)
	}
}

func (s *stack) checkDockerignore() {
	b, err := os.ReadFile(filepath.Join(s.root, ".dockerignore"))
	if err != nil {
		s.errorf(".dockerignore: %v", err)
		return
	}
	var patterns []string
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	ignored := func(path string) bool {
		out := false
		for _, p := range patterns {
			negate := strings.HasPrefix(p, "!")
			p = strings.Trim(strings.TrimPrefix(p, "!"), "/")
			match := false
			parts := strings.Split(path, "/")
			for i := range parts {
				prefix := strings.Join(parts[:i+1], "/")
				if ok, _ := filepath.Match(p, prefix); ok {
					match = true
				}
				if rest, ok := strings.CutPrefix(p, "**/"); ok {
					if ok, _ := filepath.Match(rest, parts[i]); ok {
						match = true
					}
				}
			}
			if match {
				out = !negate
			}
		}
		return out
	}
	for _, p := range []string{".git/config", ".tb/state", "tb", ".env"} {
		if !ignored(p) {
			s.errorf(".dockerignore: want %s left out of the build context", p)
		}
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd/tb/main.go", "internal/cli/cli.go", "bucket", "workflows"} {
		if ignored(p) {
			s.errorf(".dockerignore: %s is needed to build tb", p)
		}
	}
}

func containsWord(fields []string, w string) bool {
	for _, f := range fields {
		if f == w {
			return true
		}
	}
	return false
}

// splitImage splits an image reference into repository and tag.
func splitImage(image string) (repo, tag string) {
	image, _, _ = strings.Cut(image, "@")
	slash := strings.LastIndex(image, "/")
	if colon := strings.LastIndex(image, ":"); colon > slash {
		return image[:colon], image[colon+1:]
	}
	return image, ""
}

var leadingVersion = regexp.MustCompile(`^\d+(\.\d+)*`)

// compareVersions compares the dotted numbers at the start of a and b.
func compareVersions(a, b string) int {
	pa := strings.Split(leadingVersion.FindString(a), ".")
	pb := strings.Split(leadingVersion.FindString(b), ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// goImageSatisfies reports whether golang:tag provides go version need: a tag
// naming only a minor version (1.26) gets that minor's latest release.
func goImageSatisfies(tag, need string) bool {
	v := leadingVersion.FindString(tag)
	if strings.Count(v, ".") == 1 {
		parts := strings.SplitN(need, ".", 3)
		if len(parts) == 3 {
			need = parts[0] + "." + parts[1]
		}
	}
	return v != "" && compareVersions(v, need) >= 0
}

func goModVersion(root string) string {
	// The image builds the workspace: the highest go directive of go.work and its modules.
	highest := ""
	for _, f := range []string{"go.work", "go.mod", filepath.Join("cmd", "go.mod")} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		m := regexp.MustCompile(`(?m)^go (\d+(?:\.\d+)*)`).FindStringSubmatch(string(b))
		if m != nil && (highest == "" || compareVersions(m[1], highest) > 0) {
			highest = m[1]
		}
	}
	return highest
}

// read returns a file of the repository (a path relative to root).
func (s *stack) read(path string) ([]byte, error) {
	path = filepath.Clean(path)
	if b, ok := s.files[path]; ok {
		return b, nil
	}
	return os.ReadFile(filepath.Join(s.root, path))
}

// readDir returns the names of the files in a directory of the repository
// that end in one of exts, sorted.
func (s *stack) readDir(dir string, exts ...string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, dir))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() && slices.Contains(exts, filepath.Ext(e.Name())) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// mounted returns what a service mounts at target, which must be a file or
// directory of this repository, read-only.
func (s *stack) mounted(name, target string) (volume, bool) {
	for _, v := range s.doc.Services[name].Volumes {
		if v.target != target {
			continue
		}
		if !strings.HasPrefix(v.source, ".") {
			s.errorf("services.%s.volumes: mount a file or directory of this repository at %s, not %q", name, target, v.source)
			return v, false
		}
		if !v.readOnly {
			s.errorf("services.%s.volumes: mount %s read-only", name, target)
		}
		if _, err := os.Stat(filepath.Join(s.root, v.source)); err != nil {
			s.errorf("services.%s.volumes: %v", name, err)
			return v, false
		}
		return v, true
	}
	s.errorf("services.%s: nothing is mounted at %s", name, target)
	return volume{}, false
}

// listensEverywhere reports whether a listen address takes connections on
// every interface of its container, so other containers reach it.
func listensEverywhere(host string) bool {
	return host == "" || host == "0.0.0.0" || host == "::"
}

// prometheusConfig is the part of prometheus.yml the stack relies on.
type prometheusConfig struct {
	Global struct {
		ScrapeInterval string `yaml:"scrape_interval"`
	} `yaml:"global"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		Scheme        string `yaml:"scheme"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// checkPrometheus checks that Prometheus loads a configuration of the
// repository that scrapes the tb worker's and the Temporal server's metrics
// where they serve them.
func (s *stack) checkPrometheus() {
	prom := s.doc.Services["prometheus"]
	path := "/etc/prometheus/prometheus.yml"
	for _, a := range prom.Command.args {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			path = v
		}
	}
	v, ok := s.mounted("prometheus", path)
	if !ok {
		return
	}
	b, err := s.read(v.source)
	if err != nil {
		s.errorf("services.prometheus: %v", err)
		return
	}
	var cfg prometheusConfig
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		s.errorf("%s: %v", v.source, err)
		return
	}
	if d, err := time.ParseDuration(cmp.Or(cfg.Global.ScrapeInterval, "1m")); err != nil || d <= 0 {
		s.errorf("%s: global.scrape_interval %q: %v", v.source, cfg.Global.ScrapeInterval, err)
	}
	scraped := map[string]string{} // host:port → path
	for _, job := range cfg.ScrapeConfigs {
		for _, sc := range job.StaticConfigs {
			for _, target := range sc.Targets {
				host, _, err := net.SplitHostPort(target)
				if err != nil || s.doc.Services[host] == nil {
					s.errorf("%s: job %s scrapes %q, which is not host:port of a service of docker-compose.yml", v.source, job.JobName, target)
					continue
				}
				scraped[target] = cmp.Or(job.MetricsPath, "/metrics")
			}
		}
	}
	want := func(where, service, listen, path string) {
		host, port, err := net.SplitHostPort(listen)
		switch {
		case err != nil:
			s.errorf("%s: %q is not host:port: %v", where, listen, err)
		case !listensEverywhere(host):
			s.errorf("%s: %s listens on %s only, which Prometheus in another container cannot reach: listen on 0.0.0.0", where, service, host)
		default:
			target := net.JoinHostPort(service, port)
			if got, ok := scraped[target]; !ok {
				s.errorf("%s: no job scrapes %s, where %s serves its metrics (%s)", v.source, target, service, where)
			} else if got != path {
				s.errorf("%s: %s serves its metrics at %s, but Prometheus scrapes %s", v.source, target, path, got)
			}
		}
	}
	if cmd, err := parseTB(s.doc.Services["tb-worker"].Command.args); err == nil {
		if addr, _ := cmd.Flags().GetString("metrics-address"); addr == "" {
			s.errorf("services.tb-worker.command: serve the worker's metrics for Prometheus: --metrics-address 0.0.0.0:9464")
		} else {
			want("services.tb-worker.command --metrics-address", "tb-worker", addr, cli.MetricsPath)
		}
	}
	if cfg, err := renderServer(s.doc.Services["temporal"].Environment); err == nil {
		if m := cfg.Global.Metrics; m == nil || m.Prometheus == nil || m.Prometheus.ListenAddress == "" {
			s.errorf("services.temporal.environment: the server serves no metrics: set PROMETHEUS_ENDPOINT: 0.0.0.0:8000")
		} else {
			want("services.temporal.environment.PROMETHEUS_ENDPOINT", "temporal", m.Prometheus.ListenAddress, cmp.Or(m.Prometheus.HandlerPath, "/metrics"))
		}
	}
}

// dashboard is the part of a Grafana dashboard's JSON the stack relies on.
type dashboard struct {
	file       string
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Datasource *datasourceRef  `json:"datasource"`
			Query      json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title      string         `json:"title"`
	Type       string         `json:"type"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []panelTarget  `json:"targets"`
	Panels     []panel        `json:"panels"` // a collapsed row's
}

type panelTarget struct {
	Expr       string         `json:"expr"`
	Datasource *datasourceRef `json:"datasource"`
}

// datasourceRef is a panel's datasource: {"type", "uid"}, or a name.
type datasourceRef struct{ Type, UID string }

func (d *datasourceRef) UnmarshalJSON(b []byte) error {
	var name string
	if json.Unmarshal(b, &name) == nil {
		d.UID = name
		return nil
	}
	var ref struct{ Type, UID string }
	err := json.Unmarshal(b, &ref)
	*d = datasourceRef(ref)
	return err
}

// promQuery is a PromQL expression of a dashboard, and where it is.
type promQuery struct{ where, expr string }

// labelValues is a query variable's label_values(selector, label).
var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)

// queries returns the PromQL of a dashboard's panels and query variables.
func (d dashboard) queries() []promQuery {
	var out []promQuery
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out = append(out, promQuery{fmt.Sprintf("%s: panel %q", d.file, p.Title), t.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q.Query) != nil {
			json.Unmarshal(v.Query, &q)
		}
		if m := labelValues.FindStringSubmatch(q.Query); m != nil {
			out = append(out, promQuery{fmt.Sprintf("%s: variable %q", d.file, v.Name), m[1]})
		} else if !strings.HasPrefix(strings.TrimSpace(q.Query), "label_values(") {
			out = append(out, promQuery{fmt.Sprintf("%s: variable %q", d.file, v.Name), q.Query})
		}
	}
	return out
}

// The series the dashboard must show (the names Prometheus stores, suffixes
// and all): tokens, grants and denials, acquire latency, retry delay, refill
// lag, and requests per Update.
var dashboardMust = []struct{ series, what string }{
	{"tb_bucket_tokens", "tokens over time"},
	{"tb_acquire_requests_total", "grants and denials per second"},
	{"tb_acquire_latency_seconds_bucket", "acquire latency (p99)"},
	{"tb_retry_delay_seconds_bucket", "the retry delay handed out on denial"},
	{"tb_bucket_refill_lag_seconds_bucket", "refill lag"},
	{"tb_acquire_update_requests_total", "requests per Update"},
	{"tb_acquire_updates_total", "requests per Update"},
}

// checkGrafana checks that Grafana provisions the stack's Prometheus and
// the repository's dashboards, and that everyone reads them without being
// able to change anything.
func (s *stack) checkGrafana() {
	env := s.doc.Services["grafana"].Environment
	for _, e := range []struct{ key, want, why string }{
		{"GF_AUTH_ANONYMOUS_ENABLED", "true", "the dashboard opens without a login"},
		{"GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer", "anonymous visitors may read, not change, the dashboards and datasources"},
		{"GF_SECURITY_DISABLE_INITIAL_ADMIN_CREATION", "true", "no admin user with Grafana's default password, admin"},
		{"GF_AUTH_DISABLE_LOGIN_FORM", "true", "there is no one to log in as"},
	} {
		if got := env[e.key]; got != e.want {
			s.errorf("services.grafana.environment.%s: want %q (%s), got %q", e.key, e.want, e.why, got)
		}
	}
	provisioning := cmp.Or(env["GF_PATHS_PROVISIONING"], "/etc/grafana/provisioning")

	// Datasources: by uid, the Prometheus ones reaching the prometheus service.
	uids := map[string]bool{}
	if v, ok := s.mounted("grafana", provisioning+"/datasources"); ok {
		files, err := s.readDir(v.source, ".yaml", ".yml")
		if err != nil || len(files) == 0 {
			s.errorf("services.grafana: no datasource files in %s (%v)", v.source, err)
		}
		for _, f := range files {
			path := filepath.Join(v.source, f)
			var doc struct {
				APIVersion  int `yaml:"apiVersion"`
				Datasources []struct {
					Name string `yaml:"name"`
					UID  string `yaml:"uid"`
					Type string `yaml:"type"`
					URL  string `yaml:"url"`
				} `yaml:"datasources"`
			}
			if err := s.decodeYAML(path, &doc); err != nil {
				s.errorf("%s: %v", path, err)
				continue
			}
			if doc.APIVersion != 1 {
				s.errorf("%s: apiVersion %d, want 1", path, doc.APIVersion)
			}
			for _, ds := range doc.Datasources {
				if ds.UID == "" {
					s.errorf("%s: datasource %q has no uid for dashboards to name", path, ds.Name)
				}
				uids[ds.UID] = true
				if ds.Type == "prometheus" {
					if u, err := url.Parse(ds.URL); err != nil || u.Host != net.JoinHostPort("prometheus", prometheusPort) {
						s.errorf("%s: datasource %q: url %q, want http://prometheus:%s, the prometheus service", path, ds.Name, ds.URL, prometheusPort)
					}
				}
			}
		}
	}

	// Dashboards: from providers of type file, whose path is a directory of the repository.
	v, ok := s.mounted("grafana", provisioning+"/dashboards")
	if !ok {
		return
	}
	files, err := s.readDir(v.source, ".yaml", ".yml")
	if err != nil || len(files) == 0 {
		s.errorf("services.grafana: no dashboard provider files in %s (%v)", v.source, err)
	}
	dashboardFiles := map[string]bool{} // their paths in the container
	for _, f := range files {
		path := filepath.Join(v.source, f)
		var doc struct {
			APIVersion int `yaml:"apiVersion"`
			Providers  []struct {
				Name    string `yaml:"name"`
				Type    string `yaml:"type"`
				Options struct {
					Path string `yaml:"path"`
				} `yaml:"options"`
			} `yaml:"providers"`
		}
		if err := s.decodeYAML(path, &doc); err != nil {
			s.errorf("%s: %v", path, err)
			continue
		}
		if doc.APIVersion != 1 {
			s.errorf("%s: apiVersion %d, want 1", path, doc.APIVersion)
		}
		for _, p := range doc.Providers {
			if cmp.Or(p.Type, "file") != "file" {
				continue
			}
			dir, ok := s.mounted("grafana", p.Options.Path)
			if !ok {
				s.errorf("%s: provider %q reads %s, which is no directory of the repository mounted into services.grafana", path, p.Name, p.Options.Path)
				continue
			}
			jsons, err := s.readDir(dir.source, ".json")
			if err != nil || len(jsons) == 0 {
				s.errorf("%s: provider %q: no dashboards in %s (%v)", path, p.Name, dir.source, err)
			}
			for _, j := range jsons {
				dashboardFiles[p.Options.Path+"/"+j] = true
				s.loadDashboard(filepath.Join(dir.source, j), uids)
			}
		}
	}
	if home := env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" && !dashboardFiles[home] {
		s.errorf("services.grafana.environment.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH: %s is not a provisioned dashboard", home)
	}
	var all []promQuery
	for _, d := range s.dashboards {
		all = append(all, d.queries()...)
	}
	shown := map[string]bool{}
	for _, q := range all {
		for _, name := range metricNames(q.expr) {
			shown[name] = true
		}
	}
	for _, m := range dashboardMust {
		if !shown[m.series] {
			s.errorf("deploy/grafana: no dashboard shows %s (%s)", m.what, m.series)
		}
	}
}

func (s *stack) decodeYAML(path string, v any) error {
	b, err := s.read(path)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(b, v)
}

// loadDashboard checks a dashboard's JSON and keeps it in s.dashboards.
func (s *stack) loadDashboard(path string, uids map[string]bool) {
	b, err := s.read(path)
	if err != nil {
		s.errorf("%s: %v", path, err)
		return
	}
	d := dashboard{file: path}
	if err := json.Unmarshal(b, &d); err != nil {
		s.errorf("%s: not a dashboard: %v", path, err)
		return
	}
	if d.UID == "" || d.Title == "" {
		s.errorf("%s: a dashboard needs a uid (for links that last) and a title", path)
	}
	for _, o := range s.dashboards {
		if o.UID == d.UID {
			s.errorf("%s: uid %q is also the uid of %s", path, d.UID, o.file)
		}
	}
	hasBucket := false
	for _, v := range d.Templating.List {
		hasBucket = hasBucket || (v.Name == "bucket" && v.Type == "query")
	}
	if !hasBucket {
		s.errorf("%s: want a query variable named bucket, so every panel shows the buckets chosen", path)
	}
	source := func(where string, ref *datasourceRef) {
		if ref != nil && !uids[ref.UID] && !strings.HasPrefix(ref.UID, "$") {
			s.errorf("%s: datasource uid %q is not provisioned (have %v)", where, ref.UID, slices.Sorted(maps.Keys(uids)))
		}
	}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := fmt.Sprintf("%s: panel %q", path, p.Title)
			source(where, p.Datasource)
			for _, t := range p.Targets {
				source(where, t.Datasource)
				if !strings.Contains(t.Expr, "$bucket") {
					s.errorf("%s: query %q does not select the chosen buckets ($bucket)", where, t.Expr)
				}
				if err := balanced(t.Expr); err != nil {
					s.errorf("%s: query %q: %v", where, t.Expr, err)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		source(fmt.Sprintf("%s: variable %q", path, v.Name), v.Datasource)
	}
	s.dashboards = append(s.dashboards, d)
}

// balanced reports brackets of a PromQL expression that do not pair up.
func balanced(expr string) error {
	var open []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	quote := rune(0)
	for _, r := range expr {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'' || r == '`':
			quote = r
		case r == '(' || r == '[' || r == '{':
			open = append(open, r)
		case pairs[r] != 0:
			if len(open) == 0 || open[len(open)-1] != pairs[r] {
				return fmt.Errorf("unmatched %q", r)
			}
			open = open[:len(open)-1]
		}
	}
	if len(open) > 0 || quote != 0 {
		return errors.New("unclosed bracket or string")
	}
	return nil
}

// PromQL's lexical pieces that metricNames skips: strings, label matchers,
// range and subquery durations, grouping label lists.
var (
	promStrings  = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\[\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promKeywords = keySet("by without on ignoring group_left group_right bool offset and or unless atan2 inf nan start end")
	promCall     = regexp.MustCompile(`^\s*\(`)
)

// metricNames returns the metric names a PromQL expression selects, in order.
func metricNames(expr string) []string {
	expr = promStrings.ReplaceAllString(expr, `""`)
	expr = promMatchers.ReplaceAllString(expr, " ")
	expr = promRanges.ReplaceAllString(expr, " ")
	expr = promGrouping.ReplaceAllString(expr, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(expr, -1) {
		name, rest := expr[loc[0]:loc[1]], expr[loc[1]:]
		if loc[0] > 0 && (expr[loc[0]-1] == '$' || expr[loc[0]-1] == '.' || (expr[loc[0]-1] >= '0' && expr[loc[0]-1] <= '9')) {
			continue // a variable, or part of a number
		}
		if promKeywords[strings.ToLower(name)] || promCall.MatchString(rest) {
			continue
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`tb_bucket_tokens`, []string{"tb_bucket_tokens"}},
		{`max by (bucket) (tb_bucket_tokens{bucket=~"$bucket"})`, []string{"tb_bucket_tokens"}},
		{`histogram_quantile(0.99, sum by (bucket, le) (rate(tb_acquire_latency_seconds_bucket{bucket=~"$bucket", result!="a{b}"}[$__rate_interval])))`, []string{"tb_acquire_latency_seconds_bucket"}},
		{`sum(rate(a_total[5m])) / on (bucket) group_left (x) sum(rate(b_total[1m:10s] offset 1h)) > bool 1e3`, []string{"a_total", "b_total"}},
		{`{__name__="x"} or up`, []string{"up"}},
		{`sum without (instance) (x) * 2.5e-3`, []string{"x"}},
	} {
		if got := metricNames(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("metricNames(%s) = %v, want %v", c.expr, got, c.want)
		}
	}
}

// seriesNames returns the names of the series scraped, as PromQL names them:
// a histogram's _bucket, _sum and _count, a summary's _sum and _count.
func seriesNames(scrapes ...map[string]*dto.MetricFamily) map[string]bool {
	names := map[string]bool{}
	for _, families := range scrapes {
		for name, f := range families {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
			case dto.MetricType_SUMMARY:
				names[name], names[name+"_sum"], names[name+"_count"] = true, true, true
			default:
				names[name] = true
			}
		}
	}
	return names
}

// unknownMetrics returns, for each query of the dashboards naming a metric
// not among emitted, where it is and the name.
func unknownMetrics(dashboards []dashboard, emitted map[string]bool) []string {
	var unknown []string
	for _, d := range dashboards {
		for _, q := range d.queries() {
			for _, name := range metricNames(q.expr) {
				if !emitted[name] {
					unknown = append(unknown, fmt.Sprintf("%s: %s", q.where, name))
				}
			}
		}
	}
	return unknown
}

// TestDashboardQueriesNameEmittedMetrics runs a workload (tb worker and an
// app worker with tb's interceptor, on an in-process server), scrapes both
// workers' metrics pages, and checks that every metric the provisioned
// dashboards query is among the series they serve, exporter suffixes and all.
func TestDashboardQueriesNameEmittedMetrics(t *testing.T) {
	s := inspectStack(readRepoFile(t, "docker-compose.yml"), readRepoFile(t, "Dockerfile"), repoRoot, nil)
	if len(s.dashboards) == 0 {
		t.Fatalf("no dashboards provisioned: %s", strings.Join(s.unique(), "\n"))
	}
	w := startWorkload(t)
	var emitted map[string]bool
	testserver.Eventually(t, 2*time.Minute, func() (bool, string) {
		emitted = seriesNames(scrape(t, w.tbWorker), scrape(t, w.app))
		unknown := unknownMetrics(s.dashboards, emitted)
		return len(unknown) == 0, fmt.Sprintf("dashboard queries name metrics the workers do not serve (%d jobs done):\n%s", w.jobs.Load(), strings.Join(unknown, "\n"))
	})
	checked := map[string]bool{}
	for _, d := range s.dashboards {
		for _, q := range d.queries() {
			for _, name := range metricNames(q.expr) {
				checked[name] = true
			}
		}
	}
	t.Logf("%d metrics of %d dashboard(s), all served: %v", len(checked), len(s.dashboards), slices.Sorted(maps.Keys(checked)))
	// A name the workers do not serve is caught, as are the exporter's suffixes.
	for _, expr := range []string{
		`sum by (bucket) (rate(tb_acquire_request_total{bucket=~"$bucket"}[$__rate_interval]))`,
		`sum by (bucket) (rate(tb_acquire_requests{bucket=~"$bucket"}[$__rate_interval]))`,
		`histogram_quantile(0.99, sum by (le) (rate(tb_acquire_latency_bucket{bucket=~"$bucket"}[5m])))`,
	} {
		bad := dashboard{file: "bad.json", Panels: []panel{{Title: "bad", Targets: []panelTarget{{Expr: expr}}}}}
		if got := unknownMetrics([]dashboard{bad}, emitted); len(got) != 1 {
			t.Errorf("a dashboard querying %s: unknown %v, want its metric", expr, got)
		}
	}
}

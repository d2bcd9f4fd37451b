package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestConsumerModuleStaysLean builds what a service that only wants the
// interceptor builds: a fresh module importing github.com/tokenbucket/tb/interceptor,
// tidied on its own (no workspace). Its module graph must stay near the SDK's
// own (78 modules), hold none of the command's dependencies, and not raise the
// consumer's go directive above the SDK's.
func TestConsumerModuleStaysLean(t *testing.T) {
	if testing.Short() {
		t.Skip("tidies a fresh module")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/consumer\n\ngo 1.26\n\nrequire github.com/tokenbucket/tb v0.0.0\n\nreplace github.com/tokenbucket/tb => "+root+"\n")
	write("main.go", `package main

import "github.com/tokenbucket/tb/interceptor"

func main() { _, _ = interceptor.New(interceptor.Options{}) }
`)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("mod", "tidy")
	run("build", "-o", os.DevNull, ".")
	modules := strings.Fields(run("list", "-m", "-f", "{{.Path}}", "all"))
	const most = 90
	if len(modules) > most {
		t.Errorf("a module importing only interceptor has %d modules in its graph, more than %d", len(modules), most)
	}
	for _, m := range modules {
		for _, heavy := range []string{"go.temporal.io/server", "github.com/temporalio/ui-server", "github.com/aws/", "k8s.io/"} {
			if strings.HasPrefix(m, heavy) {
				t.Errorf("the consumer's graph holds %s", m)
			}
		}
	}
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mod), "\ngo 1.26.0\n") && !strings.Contains(string(mod), "\ngo 1.26\n") {
		t.Errorf("tidying raised the consumer's go directive:\n%s", mod)
	}
	t.Logf("%d modules", len(modules))
}

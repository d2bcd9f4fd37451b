package cli

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestReadVersion(t *testing.T) {
	installed := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/tokenbucket/tb/cmd", Version: "v0.2.0"},
		Deps: []*debug.Module{
			{Path: "github.com/tokenbucket/tb", Version: "v0.2.0"},
			{Path: "go.temporal.io/sdk", Version: "v1.50.0"},
			{Path: "go.temporal.io/server", Version: "v1.32.1"},
		},
	}
	if v := readVersion(installed); v.Version != "v0.2.0" || v.Library != "v0.2.0" || v.SDK != "v1.50.0" || v.Server != "v1.32.1" || !strings.HasPrefix(v.Go, "go1.26.8 ") {
		t.Errorf("go install's build: %+v", v)
	}
	local := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/tokenbucket/tb/cmd", Version: "(devel)"},
		Deps: []*debug.Module{{Path: "github.com/tokenbucket/tb", Version: "v0.2.0", Replace: &debug.Module{Path: "../"}}},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	if v := readVersion(local); v.Version != "(devel)" || v.Revision != "0123456789ab+dirty" || v.Library != "local" {
		t.Errorf("a local build: %+v", v)
	}
}

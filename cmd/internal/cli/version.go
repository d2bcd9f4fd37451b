package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Modules whose versions tb version reports, besides the command's own.
const (
	libraryModule = "github.com/tokenbucket/tb"
	sdkModule     = "go.temporal.io/sdk"
	serverModule  = "go.temporal.io/server"
)

// versionInfo is what tb version prints: read from the binary's build info.
type versionInfo struct {
	Version  string `json:"version"`            // the command module's version, "(devel)" for a local build
	Revision string `json:"revision,omitempty"` // the commit of a local build, "+dirty" if modified
	Library  string `json:"library"`            // the library module's version ("local" in a workspace build)
	SDK      string `json:"sdk"`
	Server   string `json:"server"` // of tb dev's embedded server
	Go       string `json:"go"`
}

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of tb, of its library, and of the Temporal SDK and server it is built with",
		RunE: func(*cobra.Command, []string) error {
			bi, ok := debug.ReadBuildInfo()
			if !ok {
				return fmt.Errorf("this binary carries no build information")
			}
			v := readVersion(bi)
			if g.json() {
				return g.printJSON(v)
			}
			version := v.Version
			if v.Revision != "" {
				version += " (" + v.Revision + ")"
			}
			fmt.Fprintf(g.io.Out, "tb %s\nlibrary %s %s\nsdk %s %s\nserver %s %s\n%s\n",
				version, libraryModule, v.Library, sdkModule, v.SDK, serverModule, v.Server, v.Go)
			return nil
		},
	}
}

func readVersion(bi *debug.BuildInfo) versionInfo {
	v := versionInfo{Version: bi.Main.Version, Go: bi.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH}
	if v.Version == "" {
		v.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value[:min(len(s.Value), 12)] + v.Revision
		case "vcs.modified":
			if s.Value == "true" {
				v.Revision += "+dirty"
			}
		}
	}
	for _, m := range bi.Deps {
		version := m.Version
		if m.Replace != nil {
			if m.Replace.Version == "" {
				version = "local" // the workspace's, or a replace by path
			} else {
				version = m.Replace.Version
			}
		}
		switch m.Path {
		case libraryModule:
			v.Library = version
		case sdkModule:
			v.SDK = version
		case serverModule:
			v.Server = version
		}
	}
	for _, f := range []*string{&v.Library, &v.SDK, &v.Server} {
		if *f == "" {
			*f = "unknown" // a test binary lists no dependencies
		}
	}
	return v
}

package cli

import "github.com/spf13/cobra"

func newDevCommand(g *globals) *cobra.Command {
	return &cobra.Command{Use: "dev", Short: "Run tb on an embedded Temporal server", RunE: func(*cobra.Command, []string) error { return nil }}
}

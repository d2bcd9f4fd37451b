package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tokenbucket/tb/bucket"
)

func newValidateCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate",
		Short: "Check buckets.yaml; exit non-zero with line-numbered errors",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			var verr bucket.ValidationError
			if errors.As(err, &verr) {
				if g.json() {
					type problem struct {
						File   string `json:"file"`
						Line   int    `json:"line,omitempty"`
						Bucket string `json:"bucket,omitempty"`
						Field  string `json:"field,omitempty"`
						Error  string `json:"error"`
					}
					out := []problem{}
					for _, fe := range verr {
						out = append(out, problem{fe.File, fe.Line, fe.Bucket, fe.Field, fe.Err.Error()})
					}
					if err := g.printJSON(map[string]any{"valid": false, "errors": out}); err != nil {
						return err
					}
				} else {
					for _, fe := range verr {
						fmt.Fprintln(g.io.Out, fe)
					}
				}
				return fmt.Errorf("%s: %d problem(s)", g.config, len(verr))
			}
			if err != nil {
				return err
			}
			g.warnTogether(cfg)
			if g.json() {
				return g.printJSON(map[string]any{"valid": true, "buckets": len(cfg.Buckets), "activities": len(cfg.Guards)})
			}
			fmt.Fprintf(g.io.Out, "%s: %d buckets, %d guarded activity types: valid\n", g.config, len(cfg.Buckets), len(cfg.Guards))
			return nil
		},
	}
}

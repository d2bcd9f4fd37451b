package operator

import (
	"errors"
	"fmt"

	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/bucket"
)

// errNoClient is the error of every function given a nil client.
var errNoClient = errors.New("operator: the client is nil")

// check refuses what Plan and Apply must not act on: no client, no config,
// an invalid spec or task queue, a name declared twice.
func check(c client.Client, cfg *bucket.Config, opts Options) error {
	if c == nil {
		return errNoClient
	}
	if cfg == nil {
		return errors.New("operator: the config is nil; give the one bucket.Load returns, or an empty one")
	}
	if opts.TaskQueue != "" {
		if err := bucket.CheckTaskQueue(opts.TaskQueue); err != nil {
			return fmt.Errorf("Options.TaskQueue %w", err)
		}
	}
	var errs bucket.ValidationError
	seen := map[string]bool{}
	for _, spec := range cfg.Buckets {
		var invalid bucket.ValidationError
		if errors.As(spec.Validate(), &invalid) {
			errs = append(errs, invalid...)
		}
		if spec.Name != "" && seen[spec.Name] {
			errs = append(errs, &bucket.FieldError{Bucket: spec.Name, Field: "name", Err: fmt.Errorf("%q is declared twice", spec.Name)})
		}
		seen[spec.Name] = true
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

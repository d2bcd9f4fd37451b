package operator_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/operator"
)

// A deploy tool syncs buckets.yaml after deploying the tb workers: it shows
// the plan, then applies it, as tb sync-schedules does. It needs a Temporal
// server, so go test compiles it without running it.
func Example() {
	cfg, err := bucket.Load("buckets.yaml")
	if err != nil {
		log.Fatal(err) // names the file, line, bucket and field of each problem
	}
	c, err := client.Dial(client.Options{HostPort: "temporal:7233", Namespace: "prod"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	opts := operator.Options{Retire: true} // also end the workflows of buckets removed from the file
	plan, err := operator.Plan(ctx, c, cfg, opts)
	var empty *operator.EmptyConfigError
	if errors.As(err, &empty) {
		log.Fatalf("refusing to remove every bucket: %v", empty.Buckets)
	}
	if err != nil {
		log.Fatal(err) // each failure names its bucket
	}
	for _, ch := range plan {
		fmt.Printf("%s: Schedule %s, workflow %s %s\n", ch.Bucket, ch.Schedule, ch.Workflow, ch.Details)
	}

	changes, err := operator.Apply(ctx, c, cfg, opts)
	for _, ch := range changes {
		for _, w := range ch.Warnings {
			fmt.Fprintf(os.Stderr, "bucket %s: %s\n", ch.Bucket, w)
		}
	}
	if err != nil {
		log.Fatal(err)
	}
}

// State tells a bucket that is not running, and one no worker answers for,
// from other failures.
func ExampleState() {
	c, err := client.Dial(client.Options{HostPort: "127.0.0.1:7233"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	st, err := operator.State(context.Background(), c, "github_api")
	var (
		notRunning *operator.NotRunningError
		noAnswer   *operator.NoAnswerError
	)
	switch {
	case errors.As(err, &notRunning) && notRunning.Retired():
		fmt.Println("retired at", notRunning.Closed)
	case errors.As(err, &notRunning):
		fmt.Println("not running:", err)
	case errors.As(err, &noAnswer):
		fmt.Println("start a tb worker:", err)
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("%d/%d tokens, next refill %v\n", st.Tokens, st.Spec.Maximum, st.NextRefill)
	}
}

// Refill tops a bucket up by hand and waits until the bucket has applied it.
func ExampleRefill() {
	c, err := client.Dial(client.Options{HostPort: "127.0.0.1:7233"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	before, after, err := operator.Refill(context.Background(), c, "github_api", operator.RefillOptions{Amount: 100})
	var notApplied *operator.NotAppliedError
	if errors.As(err, &notApplied) {
		log.Fatalf("sent, applied once a worker runs the bucket (do not send it again): %v", err)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d → %d tokens\n", before.Tokens, after.Tokens)
}

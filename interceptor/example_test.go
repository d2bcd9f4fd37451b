package interceptor_test

import (
	"context"
	"fmt"
	"log"

	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"

	"github.com/tokenbucket/tb/interceptor"
)

// Register tb's interceptor on your worker: every activity buckets.yaml lists
// then takes its tokens before it runs, on every worker of the application.
func Example() {
	limiter, err := interceptor.FromFile("../buckets.yaml", interceptor.Options{})
	if err != nil {
		log.Fatal(err)
	}
	// Once the worker has stopped: leased tokens go back to their buckets.
	defer limiter.Close(context.Background())
	c, err := client.NewLazyClient(client.Options{HostPort: "127.0.0.1:7233"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	w := worker.New(c, "my-task-queue", worker.Options{
		Interceptors: []temporalinterceptor.WorkerInterceptor{limiter},
	})
	_ = w // register your workflows and activities, then w.Run(worker.InterruptCh())

	gs, _ := limiter.Guarded("SearchCode")
	g := gs[0]
	fmt.Printf("SearchCode takes %d tokens from %s\n", g.Cost, g.Bucket)
	// Output: SearchCode takes 10 tokens from github_api
}

// Package tbtest tests code guarded by tb without a Temporal server: a Limiter
// keeps buckets in memory and answers as tb's bucket workflows do, on a clock
// the test controls. Most callers want NewLimiter, passed to the interceptor
// as interceptor.Options.Limiter.
//
// In a testsuite.TestActivityEnvironment, which runs activities in real
// time, read the buckets on a Clock and move it between calls:
//
//	clock := tbtest.NewClock(time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC))
//	lim, err := tbtest.NewLimiter(clock.Now, cfg.Buckets...)
//	tb, err := interceptor.New(interceptor.Options{Guards: cfg.Guards, Limiter: lim, MaxWait: -1, MaxJitter: -1})
//	env.SetWorkerOptions(worker.Options{Interceptors: []temporalinterceptor.WorkerInterceptor{tb}})
//	...
//	clock.Advance(time.Minute) // past the next tick: the buckets refill
//
// In a testsuite.TestWorkflowEnvironment, read them on the environment's own
// clock, which skips ahead to each timer and to each activity retry: a denied
// activity's RateLimited error sets NextRetryDelay to the bucket's next
// refill, the environment jumps there, and the retry finds the tokens, as in
// production but at once. Set the start time before NewLimiter, which starts
// the buckets:
//
//	env.SetStartTime(start)
//	lim, err := tbtest.NewLimiter(env.Now, cfg.Buckets...)
//
// Activity info does not carry the environment's time (its ScheduledTime and
// StartedTime are the wall clock's), so env.Now is the way to read it.
//
// In both, set the interceptor's MaxWait negative. A denial shorter than
// MaxWait is waited out inside the activity in real time, while the clock
// the Limiter reads stands still until the activity ends, so every ask is
// denied again until the activity's deadline nears: its StartToCloseTimeout
// in real time, 10 minutes by default in TestActivityEnvironment. A negative
// MaxJitter makes NextRetryDelay, and in the workflow environment the
// retries, fall exactly on the refills.
//
// Make one Limiter for each test environment. tb names a request after its
// workflow, run, activity ID and attempt, and every test environment uses the
// same workflow and run IDs and numbers activities from the start, so a
// Limiter shared by two environments takes the second one's first call for a
// retry of the first one's, and grants it without taking a token.
//
// TestWorkflowEnvironment gives an activity whose retry policy says
// MaximumAttempts 0 (unlimited, as tb recommends) 10 attempts, so a call
// denied 10 times fails there with its RateLimited error, although in
// production it would keep trying until its ScheduleToCloseTimeout.
package tbtest

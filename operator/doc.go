// Package operator manages tb's buckets in a Temporal namespace from Go: it
// is what the tb command's sync-schedules, tokens and refill do, for deploy
// tooling that should not shell out to tb.
//
// Most callers want Apply, run at deploy time after the tb workers: it makes
// the namespace's refill Schedules and bucket workflows match a
// bucket.Config (from bucket.Load), and Plan says first what it would do.
// State, States and Running read buckets, and Refill tops one up by hand.
//
// Every function takes the client.Client of the namespace, built as usual:
// tb reads payloads with that client's data converter, except the memos and
// Schedule arguments Apply reads, which take Options.DataConverter. The
// errors a caller may act on are typed, for errors.As: *EmptyConfigError,
// *NotRunningError, *NoAnswerError and *NotAppliedError.
package operator

// Package histories records the bucket and refill workflow histories that
// workflows' replay test replays; its test does the recording, on request.
package histories

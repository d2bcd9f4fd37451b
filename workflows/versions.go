package workflows

// Changes of the bucket workflow's behaviour that a recorded history would
// see, each gated by workflow.GetVersion: a run recorded before the change
// (no marker) replays on the old path, a run that reaches the change on a
// new build takes the new one. Keep the old path until no run can still hold
// a history without the marker.
//
// One change is not gated: a spec naming the Local zone (refused now) is read
// as UTC. Before, it was read in the zone of whichever worker ran the task, so
// there is no single old path to keep.
const (
	// changeLeaseFor: an answer that lends a lease says how long the lease's
	// window lasts (AcquireResponse.LeaseFor), so the borrower never compares
	// the server's clock with its own. Before it, the answer carried NextTick
	// only; a borrower given no LeaseFor gives the lease back at once.
	changeLeaseFor = "lease-for"
	// changeAuthorizeNext: a scheduled refill authorizes the bucket to apply
	// the next tick by itself when its time comes (bucket.Bucket.Authorize).
	// Before it, every tick waited for its own refill.
	changeAuthorizeNext = "authorize-next"
	// changeAuthorizeLead: a scheduled refill authorizes every tick within
	// bucket.AuthorizeLead after its own, not only the next, so a refill
	// more than one period late costs nothing at short periods. Before it,
	// a run authorized the next tick alone (bucket.Bucket.AuthorizeNext).
	changeAuthorizeLead = "authorize-lead"
	// changeLedger: a run remembers the cost of each grant (what a settle
	// signal may refund) and keeps granted request IDs an hour instead of a
	// minute, for settle-ups of long calls. Checked once, when a run starts.
	changeLedger = "ledger"
)

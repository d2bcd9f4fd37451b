package bucket

import "time"

// KeyState is one key's bucket in a keyed bucket: its tokens as of AsOf, the
// keyed bucket's latest applied tick when they were last brought up to date;
// every tick applied since adds the spec's amount. Field names are short: a
// shard carries thousands of them across continue-as-new.
type KeyState struct {
	Tokens int64     `json:"t"`
	Debt   int64     `json:"d,omitempty"`
	AsOf   time.Time `json:"a,omitzero"`
	// Paused is when a pause the upstream asked for this key ends.
	Paused time.Time `json:"p,omitzero"`
	// Used is when the key last took tokens.
	Used time.Time `json:"u,omitzero"`
}

// Key returns the bucket of one key of keyed bucket b: k's tokens (a new
// key's, when k is nil: the spec's initial tokens) caught up with the ticks b
// applied since k.AsOf, with b's schedule, forecasts and pause. Its counters
// start at zero. Take, Check, Refund and Charge on it, then Keep what it holds.
func (b *Bucket) Key(k *KeyState) *Bucket {
	kb := &Bucket{spec: b.spec, sched: b.sched}
	kb.State = State{
		LastTick: b.LastTick, LastRefill: b.LastRefill, RefillLag: b.RefillLag, RefillJitter: b.RefillJitter,
		Created: b.Created, Until: b.Until, PausedUntil: b.PausedUntil,
	}
	if k == nil {
		kb.Tokens = b.spec.InitialTokens()
		return kb
	}
	// A maximum lowered since caps what the key holds.
	kb.Tokens, kb.Debt = min(k.Tokens, b.spec.Maximum), min(k.Debt, b.spec.Maximum)
	if k.Paused.After(kb.PausedUntil) {
		kb.PausedUntil = k.Paused
	}
	if k.AsOf.IsZero() || !b.tickBase().After(k.AsOf) {
		return kb
	}
	// The ticks since AsOf, one by one until the key is full (or its debt
	// paid and full): no more than maximum/amount + debt/amount of them.
	limit := (b.spec.Maximum+kb.Debt)/b.spec.Amount + 2
	for t, n := b.sched.Next(k.AsOf), int64(0); !t.IsZero() && !t.After(b.tickBase()) && n < limit; t, n = b.sched.Next(t), n+1 {
		kb.Tokens = min(b.spec.Maximum, kb.Tokens+b.spec.Amount)
		pay := min(kb.Debt, kb.Tokens)
		kb.Tokens -= pay
		kb.Debt -= pay
	}
	return kb
}

// Keep returns the key's state once kb, from Key, has acted, used at now if
// it took tokens; and adds kb's counters to b's.
func (b *Bucket) Keep(kb *Bucket, k *KeyState, used bool, now time.Time) KeyState {
	b.Granted = addSat(b.Granted, kb.Granted)
	b.Denied = addSat(b.Denied, kb.Denied)
	b.WouldDeny = addSat(b.WouldDeny, kb.WouldDeny)
	b.Refunded = addSat(b.Refunded, kb.Refunded)
	b.Charged = addSat(b.Charged, kb.Charged)
	b.Unrefunded = addSat(b.Unrefunded, kb.Unrefunded)
	out := KeyState{Tokens: kb.Tokens, Debt: kb.Debt, AsOf: b.tickBase()}
	if k != nil {
		out.Used = k.Used
		if k.Paused.After(b.PausedUntil) {
			out.Paused = k.Paused
		}
	}
	if kb.PausedUntil.After(b.PausedUntil) && kb.PausedUntil.After(out.Paused) {
		out.Paused = kb.PausedUntil
	}
	if used {
		out.Used = now
	}
	return out
}

// Resting reports whether a key's bucket is back at its starting level, with
// no debt and no pause, as of now: a key the shard may forget, since a key it
// does not hold starts at that level.
func (b *Bucket) Resting(k KeyState, now time.Time) bool {
	kb := b.Key(&k)
	return kb.Tokens >= b.spec.InitialTokens() && kb.Debt == 0 && !k.Paused.After(now)
}

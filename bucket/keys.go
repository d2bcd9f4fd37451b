package bucket

import "time"

// KeyState is one key's bucket in a keyed bucket: its tokens as of Tick, the
// keyed bucket's count of applied ticks (State.Ticks) when they were last
// brought up to date; every tick applied since adds the spec's amount, as a
// refill adds it to an unkeyed bucket. A tick older than the latest applied
// (a refill arriving out of order) adds nothing to the keys. Field names are
// short: a shard carries thousands of them across continue-as-new.
type KeyState struct {
	Tokens int64 `json:"t"`
	Debt   int64 `json:"d,omitempty"`
	Tick   int64 `json:"a,omitempty"`
	// Paused is when a pause the upstream asked for this key ends.
	Paused time.Time `json:"p,omitzero"`
	// Used is when the key last took tokens.
	Used time.Time `json:"u,omitzero"`
}

// Key returns the bucket of one key of keyed bucket b: k's tokens (a new
// key's, when k is nil: the spec's initial tokens) caught up with the ticks b
// applied since k.Tick, with b's schedule, forecasts and pause. Its counters
// start at zero. Take, Check, Refund and Charge on it, then Keep what it
// holds. It takes the same time however long the key has been idle.
func (b *Bucket) Key(k *KeyState) *Bucket {
	kb := &Bucket{spec: b.spec, sched: b.sched}
	kb.State = State{
		LastTick: b.LastTick, LastRefill: b.LastRefill, RefillLag: b.RefillLag, RefillJitter: b.RefillJitter,
		Created: b.Created, Until: b.Until, PausedUntil: b.PausedUntil, Ticks: b.Ticks,
	}
	if k == nil {
		kb.Tokens = b.spec.InitialTokens()
		return kb
	}
	// A maximum lowered since caps what the key holds.
	kb.Tokens, kb.Debt = clamp(k.Tokens, 0, b.spec.Maximum), clamp(k.Debt, 0, b.spec.Maximum)
	if k.Paused.After(kb.PausedUntil) {
		kb.PausedUntil = k.Paused
	}
	if n := b.Ticks - k.Tick; n > 0 {
		kb.Tokens, kb.Debt = catchUp(kb.Tokens, kb.Debt, n, b.spec.Amount, b.spec.Maximum)
	}
	return kb
}

// catchUp returns tokens and debt after n ticks, each adding amount up to
// maximum and then paying what it can of the debt: what n refills do, in
// constant time. 0 ≤ tokens, debt ≤ maximum.
func catchUp(tokens, debt, n, amount, maximum int64) (int64, int64) {
	if n <= 0 || amount <= 0 {
		return tokens, debt
	}
	if debt > 0 {
		// The first tick tops up what the key holds and pays from it.
		t := min(maximum, addSat(tokens, amount))
		pay := min(debt, t)
		tokens, debt, n = t-pay, debt-pay, n-1
	}
	if debt > 0 {
		// The key holds nothing; each tick adds step, all of it to the debt,
		// until the tick that clears it.
		step := min(amount, maximum)
		clears := (debt + step - 1) / step
		if n < clears {
			return 0, debt - n*step
		}
		tokens, debt, n = clears*step-debt, 0, n-clears
	}
	// No debt: n ticks add n amounts, up to maximum.
	if room := maximum - tokens; n >= (room+amount-1)/amount {
		return maximum, 0
	}
	return tokens + n*amount, 0
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
	out := KeyState{Tokens: kb.Tokens, Debt: kb.Debt, Tick: b.Ticks}
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

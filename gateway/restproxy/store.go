package restproxy

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Ticket names what one request is limited by, for a Store.
type Ticket struct {
	// Identity is IdentityOf the request's Authorization.
	Identity string
	// Route is Route.Key.
	Route string
	// Major is Route.Major.
	Major string
	// Lease bounds how long the bucket stays held for this request if its
	// holder disappears (a crashed process).
	Lease time.Duration
}

// Lane is the wake-up channel of a ticket: every bucket of one identity and
// top-level resource shares it.
func (t Ticket) Lane() string { return t.Identity + "|" + t.Major }

// RouteKey is the bucket key of a ticket's route before its hash is
// known: identity, route and top-level resource.
func (t Ticket) RouteKey() string { return t.Identity + "|" + t.Route + "|" + t.Major }

// MapKey is the key under which a store keeps the bucket hash learned for
// a ticket's route: identity and route.
func (t Ticket) MapKey() string { return t.Identity + "|" + t.Route }

// HashKey is the bucket key of a bucket hash for a ticket's identity and
// top-level resource.
func (t Ticket) HashKey(hash string) string { return t.Identity + "|#" + hash + "|" + t.Major }

// Update is what a response taught about a bucket, for Store.Release.
type Update struct {
	// Hash is X-RateLimit-Bucket, when sent.
	Hash string
	// HasLimits reports that Limit, Remaining and ResetAfter were sent.
	HasLimits  bool
	Limit      int
	Remaining  int
	ResetAfter time.Duration
	// Unlimited marks a route that answered with no bucket headers: only
	// the global limit applies to it.
	Unlimited bool
	// PauseFor holds the bucket for this long (a user or shared 429).
	PauseFor time.Duration
	// Refund gives the slot back: the request was not sent.
	Refund bool
}

// Grant is the result of Store.Acquire.
type Grant struct {
	// Key is the bucket key taken, when Wait is 0.
	Key string
	// Wait is how long to wait before trying again (or until a wake-up on
	// the ticket's lane); 0 when the slot was taken.
	Wait time.Duration
	// Held reports that the wait is for another request holding the
	// bucket (it ends at its Release, usually well before Wait), not for
	// the bucket's reset.
	Held bool
}

// BucketState is one bucket as a Store holds it (for `spectacles buckets`).
type BucketState struct {
	// Key is the store key: identity hash, bucket (route or #hash) and
	// top-level resource.
	Key       string `json:"key"`
	Limit     int    `json:"limit"`
	Remaining int    `json:"remaining"`
	// ResetAt is when the bucket's window ends (nil when unknown).
	ResetAt *time.Time `json:"reset_at,omitempty"`
	// InFlight reports a request held the bucket.
	InFlight  bool `json:"in_flight"`
	Unlimited bool `json:"unlimited"`
}

// Store holds rate-limit state, in memory for one process or in Redis for
// several. Every method is atomic with respect to the others.
type Store interface {
	// Acquire tries to take one request slot of the ticket's bucket (the
	// learned hash's, else the route's).
	Acquire(ctx context.Context, t Ticket, now time.Time) (Grant, error)
	// Release frees the bucket key taken by Acquire, applies u (learning
	// the route's hash) and wakes the lane's waiters.
	Release(ctx context.Context, t Ticket, key string, u Update, now time.Time) error
	// Wake returns a channel that receives after the next Release on lane,
	// and a function to stop listening. Call it before Acquire so that no
	// wake-up is lost.
	Wake(lane string) (<-chan struct{}, func())
	// TakeGlobal counts one request against identity's global limit of
	// limit per window and returns its slot, or returns how long to wait
	// before trying again. A slot counts while its request is in flight
	// (up to GlobalSlotLease), then until its settled time plus window.
	TakeGlobal(ctx context.Context, identity string, limit int, window time.Duration, now time.Time) (slot string, wait time.Duration, err error)
	// SettleGlobal gives a slot its time, at: when Discord's answer came
	// (or the request failed), by when Discord has surely counted it. So
	// no latency between sending and Discord's count can fit more than
	// the limit in any window.
	SettleGlobal(ctx context.Context, identity, slot string, at time.Time) error
	// PauseGlobal stops identity's requests until until (a global 429).
	PauseGlobal(ctx context.Context, identity string, until time.Time) error
	// AddInvalid counts one invalid request (401, 403, non-shared 429).
	AddInvalid(ctx context.Context, now time.Time) error
	// Invalid returns the invalid requests of the last 10 minutes and the
	// end of a Cloudflare ban (zero when none).
	Invalid(ctx context.Context, now time.Time) (count int, bannedUntil time.Time, err error)
	// Ban stops every request until until (a Cloudflare ban).
	Ban(ctx context.Context, until time.Time) error
	// Buckets lists the buckets.
	Buckets(ctx context.Context, now time.Time) ([]BucketState, error)
	// Close releases the store's resources.
	Close() error
}

// Waiters are the wake-up channels of a store's lanes. The zero value is
// ready; it is safe for concurrent use.
type Waiters struct {
	mu    sync.Mutex
	lanes map[string]map[chan struct{}]struct{}
}

// Listen returns a channel that receives after the next Signal of lane,
// and a function to stop listening.
func (w *Waiters) Listen(lane string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.lanes == nil {
		w.lanes = map[string]map[chan struct{}]struct{}{}
	}
	if w.lanes[lane] == nil {
		w.lanes[lane] = map[chan struct{}]struct{}{}
	}
	w.lanes[lane][ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.lanes[lane], ch)
		if len(w.lanes[lane]) == 0 {
			delete(w.lanes, lane)
		}
		w.mu.Unlock()
	}
}

// Signal wakes every listener of lane.
func (w *Waiters) Signal(lane string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.lanes[lane] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// InvalidWindow is the window of Discord's invalid-request limit, and
// invalidSlot the resolution stores count it with.
const (
	InvalidWindow = 10 * time.Minute
	invalidSlot   = 10 * time.Second
)

// MemoryStore is a Store for one process.
type MemoryStore struct {
	mu       sync.Mutex
	buckets  map[string]*memBucket
	hashes   map[string]memHash
	global   map[string]*memGlobal
	invalid  map[int64]int // slot -> count
	banned   time.Time
	waiters  Waiters
	lastSwep time.Time
}

type memBucket struct {
	limit, remaining int
	resetAt          time.Time
	lockedUntil      time.Time
	unlimited        bool
	used             time.Time
}

type memHash struct {
	hash string
	used time.Time
}

type memGlobal struct {
	inFlight map[uint64]time.Time // slot -> when taken
	settled  []time.Time          // settled slots' times, ascending
	paused   time.Time
	next     uint64
}

// GlobalSlotLease bounds how long a global slot of a request still in
// flight counts (its process may have died).
const GlobalSlotLease = 30 * time.Second

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{
		buckets: map[string]*memBucket{},
		hashes:  map[string]memHash{},
		global:  map[string]*memGlobal{},
		invalid: map[int64]int{},
	}
}

// Idle state is forgotten: hashes after a day unused (as discord.js),
// buckets once reset and unused for 10 minutes.
const (
	hashTTL   = 24 * time.Hour
	bucketTTL = 10 * time.Minute
)

func (s *MemoryStore) resolveLocked(t Ticket, now time.Time) string {
	if h, ok := s.hashes[t.MapKey()]; ok {
		h.used = now
		s.hashes[t.MapKey()] = h
		return t.HashKey(h.hash)
	}
	return t.RouteKey()
}

// Acquire implements Store.
func (s *MemoryStore) Acquire(_ context.Context, t Ticket, now time.Time) (Grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	key := s.resolveLocked(t, now)
	b := s.buckets[key]
	if b == nil {
		b = &memBucket{}
		s.buckets[key] = b
	}
	b.used = now
	g := b.take(now, t.Lease)
	if g.Wait == 0 {
		g.Key = key
	}
	return g, nil
}

// take takes a slot of b, or returns the wait.
func (b *memBucket) take(now time.Time, lease time.Duration) Grant {
	if b.unlimited {
		return Grant{}
	}
	if now.Before(b.lockedUntil) {
		return Grant{Wait: b.lockedUntil.Sub(now), Held: true}
	}
	if b.limit > 0 && !now.Before(b.resetAt) {
		b.remaining = b.limit
	}
	if b.remaining <= 0 && now.Before(b.resetAt) {
		return Grant{Wait: b.resetAt.Sub(now)}
	}
	if b.remaining > 0 {
		b.remaining--
	}
	b.lockedUntil = now.Add(lease)
	return Grant{}
}

// apply applies u to b.
func (b *memBucket) apply(u Update, now time.Time) {
	if u.HasLimits {
		b.limit, b.remaining, b.resetAt = u.Limit, u.Remaining, now.Add(u.ResetAfter)
		b.unlimited = false
	} else if u.Unlimited {
		b.unlimited = true
	}
	if u.PauseFor > 0 {
		b.remaining = 0
		b.unlimited = false
		if end := now.Add(u.PauseFor); end.After(b.resetAt) {
			b.resetAt = end
		}
	}
}

// Release implements Store.
func (s *MemoryStore) Release(_ context.Context, t Ticket, key string, u Update, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.buckets[key]; b != nil {
		b.lockedUntil = time.Time{}
		if u.Refund && b.limit > 0 && now.Before(b.resetAt) && b.remaining < b.limit {
			b.remaining++
		}
	}
	target := key
	if u.Hash != "" {
		s.hashes[t.MapKey()] = memHash{hash: u.Hash, used: now}
		target = t.HashKey(u.Hash)
	}
	if !u.Refund {
		b := s.buckets[target]
		if b == nil {
			b = &memBucket{used: now}
			s.buckets[target] = b
		}
		b.apply(u, now)
	}
	s.waiters.Signal(t.Lane())
	return nil
}

// Wake implements Store.
func (s *MemoryStore) Wake(lane string) (<-chan struct{}, func()) { return s.waiters.Listen(lane) }

// TakeGlobal implements Store with a sliding window: at most limit slots
// count at any time.
func (s *MemoryStore) TakeGlobal(_ context.Context, identity string, limit int, window time.Duration, now time.Time) (string, time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.globalLocked(identity)
	if now.Before(g.paused) {
		return "", g.paused.Sub(now), nil
	}
	from := now.Add(-window)
	i := 0
	for i < len(g.settled) && !g.settled[i].After(from) {
		i++
	}
	g.settled = g.settled[i:]
	if len(g.settled)+len(g.inFlight) >= limit {
		for id, at := range g.inFlight {
			if !now.Before(at.Add(GlobalSlotLease)) {
				delete(g.inFlight, id)
			}
		}
	}
	if len(g.settled)+len(g.inFlight) >= limit {
		// A slot in flight frees no sooner than a window after its answer,
		// so the first settled slot's end is the first chance.
		if len(g.settled) == 0 {
			return "", window, nil
		}
		return "", g.settled[0].Add(window).Sub(now) + time.Millisecond, nil
	}
	g.next++
	g.inFlight[g.next] = now
	return strconv.FormatUint(g.next, 10), 0, nil
}

// SettleGlobal implements Store.
func (s *MemoryStore) SettleGlobal(_ context.Context, identity, slot string, at time.Time) error {
	id, err := strconv.ParseUint(slot, 10, 64)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.global[identity]
	if g == nil {
		return nil
	}
	if _, ok := g.inFlight[id]; !ok {
		return nil
	}
	delete(g.inFlight, id)
	// Settles come nearly in time order: insert from the end.
	g.settled = append(g.settled, at)
	for j := len(g.settled) - 1; j > 0 && g.settled[j-1].After(g.settled[j]); j-- {
		g.settled[j-1], g.settled[j] = g.settled[j], g.settled[j-1]
	}
	return nil
}

// globalLocked returns the global state of identity, made when missing.
func (s *MemoryStore) globalLocked(identity string) *memGlobal {
	g := s.global[identity]
	if g == nil {
		g = &memGlobal{inFlight: map[uint64]time.Time{}}
		s.global[identity] = g
	}
	return g
}

// PauseGlobal implements Store.
func (s *MemoryStore) PauseGlobal(_ context.Context, identity string, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.globalLocked(identity)
	if until.After(g.paused) {
		g.paused = until
	}
	return nil
}

// AddInvalid implements Store.
func (s *MemoryStore) AddInvalid(_ context.Context, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalid[now.UnixNano()/int64(invalidSlot)]++
	return nil
}

// Invalid implements Store.
func (s *MemoryStore) Invalid(_ context.Context, now time.Time) (int, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := now.UnixNano() / int64(invalidSlot)
	n := 0
	for slot, c := range s.invalid {
		if cur-slot < int64(InvalidWindow/invalidSlot) {
			n += c
		} else {
			delete(s.invalid, slot)
		}
	}
	var banned time.Time
	if now.Before(s.banned) {
		banned = s.banned
	}
	return n, banned, nil
}

// Ban implements Store.
func (s *MemoryStore) Ban(_ context.Context, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if until.After(s.banned) {
		s.banned = until
	}
	return nil
}

// Buckets implements Store.
func (s *MemoryStore) Buckets(_ context.Context, now time.Time) ([]BucketState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]BucketState, 0, len(s.buckets))
	for k, b := range s.buckets {
		st := BucketState{Key: k, Limit: b.limit, Remaining: b.remaining,
			InFlight: now.Before(b.lockedUntil), Unlimited: b.unlimited}
		if !b.resetAt.IsZero() {
			r := b.resetAt.UTC()
			st.ResetAt = &r
		}
		if b.limit > 0 && !now.Before(b.resetAt) {
			st.Remaining = b.limit
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Close implements Store.
func (s *MemoryStore) Close() error { return nil }

// sweepLocked forgets idle buckets and hashes, at most once a minute.
func (s *MemoryStore) sweepLocked(now time.Time) {
	if now.Sub(s.lastSwep) < time.Minute {
		return
	}
	s.lastSwep = now
	for k, b := range s.buckets {
		if now.Sub(b.used) > bucketTTL && !now.Before(b.resetAt) && !now.Before(b.lockedUntil) {
			delete(s.buckets, k)
		}
	}
	for k, h := range s.hashes {
		if now.Sub(h.used) > hashTTL {
			delete(s.hashes, k)
		}
	}
	for k, g := range s.global {
		if idle := len(g.inFlight) == 0 && (len(g.settled) == 0 || now.Sub(g.settled[len(g.settled)-1]) > time.Minute); idle {
			if !now.Before(g.paused) {
				delete(s.global, k)
			}
		}
	}
}

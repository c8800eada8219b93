package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

// Presence on Redis. A client that consumes announces itself (unless
// Options.Announce.Disabled) with three kinds of keys, all in one hash
// slot so that they work on Redis Cluster:
//
//   - PresenceKeyPrefix + "instance:" + SESSION: the instance's JSON
//     core.Instance, SET with a TTL (Announce.TTL, default 12 s) and
//     refreshed every heartbeat (default 4 s): it exists while the
//     instance lives;
//   - PresenceKeyPrefix + "instances": a hash of every instance announced
//     and not yet found gone, SESSION → JSON core.Instance;
//   - PresenceKeyPrefix + "group:" + GROUP: the set of the group's
//     sessions.
//
// Joining, leaving and finding an instance gone (its TTL key expired:
// it was killed without a word) publish the core presence events, each
// once (whoever removes an instance from the hash publishes it; the
// removal of the last session of a group publishes EventGroupOffline).
// Every live instance sweeps for dead ones at each heartbeat, and so does
// Instances. The event streams are capped at about presenceStreamLen
// entries.
const PresenceKeyPrefix = "{spectacles:presence}:"

const presenceStreamLen = 1000

func instanceKey(session string) string { return PresenceKeyPrefix + "instance:" + session }
func groupKey(group string) string      { return PresenceKeyPrefix + "group:" + group }

var instancesKey = PresenceKeyPrefix + "instances"

// presence is a broker's announcement of itself.
type presence struct {
	b         *Broker
	heartbeat time.Duration
	ttl       time.Duration

	mu      sync.Mutex
	inst    core.Instance
	joined  bool
	stop    chan struct{}
	done    chan struct{}
	stopped bool
}

func newPresence(b *Broker) *presence {
	a := b.cfg.Announce
	p := &presence{b: b, heartbeat: a.Heartbeat, ttl: a.TTL}
	if p.heartbeat <= 0 {
		p.heartbeat = core.DefaultHeartbeat
	}
	if p.ttl <= 0 {
		p.ttl = core.DefaultPresenceTTL
	}
	var s [8]byte
	_, _ = rand.Read(s[:])
	host, _ := os.Hostname()
	id := b.cfg.Identity
	p.inst = core.Instance{Group: id.Group, Client: id.Client, Version: a.Version, Session: hex.EncodeToString(s[:]),
		Host: host, PID: os.Getpid(), TTLMs: p.ttl.Milliseconds()}
	return p
}

// consumed records that events are consumed and, the first time, joins
// and starts the heartbeat. Errors are logged: presence never stops
// consumption.
func (p *presence) consumed(ctx context.Context, events []string) {
	if p.b.cfg.Announce.Disabled {
		return
	}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	evs := append(slices.Clone(p.inst.Events), events...)
	sort.Strings(evs)
	p.inst.Events = slices.Compact(evs)
	var calls []string
	for _, ev := range p.inst.Events {
		if slices.Contains(p.b.cfg.Announce.Calls, ev) {
			calls = append(calls, ev)
		}
	}
	p.inst.Calls = calls
	first := !p.joined
	p.joined = true
	if first {
		p.inst.StartedAt = time.Now().UTC()
		p.stop, p.done = make(chan struct{}), make(chan struct{})
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if first {
		p.join(ctx)
		go p.loop()
	} else {
		p.beat(ctx)
	}
}

func (p *presence) snapshot() core.Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	in := p.inst
	in.LastSeen = time.Now().UTC()
	in.Events = slices.Clone(in.Events)
	if counts := p.b.unhandled.tally.Counts(); len(counts) > 0 {
		in.Unhandled = counts
	}
	return in
}

func (p *presence) loop() {
	defer close(p.done)
	t := time.NewTicker(p.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), p.heartbeat)
			p.beat(ctx)
			p.b.sweepPresence(ctx, p.inst.Session)
			cancel()
		}
	}
}

// write stores the instance's keys; it returns the pipeline's results for
// the group set when add is set.
func (p *presence) write(ctx context.Context, add bool) (*goredis.IntCmd, *goredis.IntCmd, error) {
	in := p.snapshot()
	raw, err := json.Marshal(in)
	if err != nil {
		return nil, nil, err
	}
	var added, card *goredis.IntCmd
	_, err = p.b.client.TxPipelined(ctx, func(pipe goredis.Pipeliner) error {
		pipe.Set(ctx, instanceKey(in.Session), raw, p.ttl)
		pipe.HSet(ctx, instancesKey, in.Session, raw)
		if add {
			added = pipe.SAdd(ctx, groupKey(in.Group), in.Session)
			card = pipe.SCard(ctx, groupKey(in.Group))
		}
		return nil
	})
	return added, card, err
}

func (p *presence) beat(ctx context.Context) {
	if _, _, err := p.write(ctx, false); err != nil {
		p.b.log.Warn("presence heartbeat failed", "err", err)
	}
}

func (p *presence) join(ctx context.Context) {
	p.b.sweepPresence(ctx, p.inst.Session)
	added, card, err := p.write(ctx, true)
	if err != nil {
		p.b.log.Warn("presence: announcing this instance failed", "err", err)
		return
	}
	in := p.snapshot()
	if added.Val() == 1 {
		p.b.publishPresence(ctx, core.EventInstanceConnected, in, "")
		if card.Val() == 1 {
			p.b.publishPresence(ctx, core.EventGroupOnline, in, "")
		}
	}
}

// leave removes the instance's keys and publishes that it left. It runs
// in Close, before the publish pipeline stops.
func (p *presence) leave() {
	p.mu.Lock()
	joined := p.joined && !p.stopped
	p.stopped = true
	p.mu.Unlock()
	if !joined {
		return
	}
	close(p.stop)
	<-p.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.b.removeInstance(ctx, p.snapshot(), "closed")
}

// removeInstance forgets in and, when this call removed it, publishes its
// disconnection (and its group's going offline when it was the last).
func (b *Broker) removeInstance(ctx context.Context, in core.Instance, reason string) {
	var removed, srem, card *goredis.IntCmd
	_, err := b.client.TxPipelined(ctx, func(pipe goredis.Pipeliner) error {
		pipe.Del(ctx, instanceKey(in.Session))
		removed = pipe.HDel(ctx, instancesKey, in.Session)
		srem = pipe.SRem(ctx, groupKey(in.Group), in.Session)
		card = pipe.SCard(ctx, groupKey(in.Group))
		return nil
	})
	if err != nil {
		b.log.Warn("presence: removing an instance failed", "instance", in.Group+"/"+in.Client, "err", err)
		return
	}
	if removed.Val() == 1 {
		b.publishPresence(ctx, core.EventInstanceDisconnected, in, reason)
	}
	if srem.Val() == 1 && card.Val() == 0 {
		b.publishPresence(ctx, core.EventGroupOffline, in, reason)
	}
}

// publishPresence XADDs a presence event, capped.
func (b *Broker) publishPresence(ctx context.Context, event string, in core.Instance, reason string) {
	b.publishPresenceEvent(ctx, core.PresenceEvent{Event: event, Instance: in, Reason: reason, At: time.Now().UTC()})
}

// publishPresenceEvent XADDs pe to its stream, capped.
func (b *Broker) publishPresenceEvent(ctx context.Context, pe core.PresenceEvent) {
	raw, err := b.cfg.Codec.Marshal(pe)
	if err != nil {
		return
	}
	err = b.client.XAdd(ctx, &goredis.XAddArgs{Stream: pe.Event, MaxLen: presenceStreamLen, Approx: true,
		Values: []any{"data", raw}}).Err()
	if err != nil {
		b.log.Warn("presence: publishing an event failed", "event", pe.Event, "err", err)
	}
}

// readInstances returns every instance in the hash.
func (b *Broker) readInstances(ctx context.Context) ([]core.Instance, error) {
	all, err := b.client.HGetAll(ctx, instancesKey).Result()
	if err != nil {
		return nil, err
	}
	out := make([]core.Instance, 0, len(all))
	for session, raw := range all {
		var in core.Instance
		if json.Unmarshal([]byte(raw), &in) != nil {
			in = core.Instance{Session: session}
		}
		in.Session = session
		out = append(out, in)
	}
	return out, nil
}

// sweepPresence removes the instances (other than self) whose TTL key
// expired, and returns them.
func (b *Broker) sweepPresence(ctx context.Context, self string) []core.Instance {
	list, err := b.readInstances(ctx)
	if err != nil {
		b.log.Debug("presence: reading instances failed", "err", err)
		return nil
	}
	now := time.Now()
	var gone []core.Instance
	for _, in := range list {
		if in.Session == self || !in.Stale(now) {
			continue
		}
		n, err := b.client.Exists(ctx, instanceKey(in.Session)).Result()
		if err != nil || n > 0 {
			continue
		}
		b.removeInstance(ctx, in, "expired")
		gone = append(gone, in)
	}
	return gone
}

// Instances returns the announced instances, live ones and those found
// dead by this call (stale: their LastSeen is older than their TTL), whose
// going offline it publishes.
func (b *Broker) Instances(ctx context.Context) ([]core.Instance, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	gone := b.sweepPresence(ctx, "")
	list, err := b.readInstances(ctx)
	if err != nil {
		return nil, fmt.Errorf("redis: presence: %w", err)
	}
	return append(list, gone...), nil
}

var _ core.PresenceReader = (*Broker)(nil)

// PresenceHistory reads the latest entries of the presence event streams
// (every kind but core.EventUnhandled), newest first.
func (b *Broker) PresenceHistory(ctx context.Context, n int) ([]core.PresenceEvent, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	var out []core.PresenceEvent
	for _, ev := range core.PresenceEvents() {
		if ev == core.EventUnhandled {
			continue
		}
		msgs, err := b.client.XRevRangeN(ctx, ev, "+", "-", int64(n)).Result()
		if err != nil {
			return nil, fmt.Errorf("redis: presence history: %w", err)
		}
		for _, m := range msgs {
			raw, _ := m.Values["data"].(string)
			var pe core.PresenceEvent
			if core.NewPayload([]byte(raw), core.Msgpack{}).Decode(&pe) == nil {
				out = append(out, pe)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.After(out[j].At) })
	return out[:min(n, len(out))], nil
}

var _ core.PresenceHistory = (*Broker)(nil)

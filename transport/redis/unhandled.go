package redis

import (
	"context"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/unhandled"
)

// Unhandled publishes. XADD succeeds whether or not a group reads the
// stream, so the publish path only counts, per stream, the entries it
// added (each flusher in a map of its own, under a lock only the checker
// also takes, once per interval); every Config.UnhandledInterval a
// goroutine takes those counts, asks Redis for the groups of each stream
// published to (one pipelined XINFO GROUPS per stream), and counts the
// entries of a stream without any group as unhandled (presence events
// and dead letters excepted: core.CountsAsUnhandled; calls too, which
// fail with core.ErrUnhandled instead). Each event that
// gained some is then reported once, as a core.EventUnhandled entry
// carrying the counts, and the totals go in the instance's presence
// announcement (core.Instance.Unhandled). A group created between the
// publish and the check makes those entries count as handled.

// maxTrackedStreams bounds the streams a publish shard counts between two
// checks; entries to further streams are not checked.
const maxTrackedStreams = 10000

// pubShard counts the entries one flusher (or PublishBatch) added.
type pubShard struct {
	mu sync.Mutex
	n  map[string]uint64
}

// addLocked counts one entry of stream; mu is held.
func (s *pubShard) addLocked(stream string, n uint64) {
	if s.n == nil {
		s.n = map[string]uint64{}
	}
	if _, ok := s.n[stream]; ok || len(s.n) < maxTrackedStreams {
		s.n[stream] += n
	}
}

// take returns the counts and starts new ones.
func (s *pubShard) take() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.n
	s.n = nil
	return n
}

// unhandledState is a broker's counting of unhandled publishes.
type unhandledState struct {
	shards []*pubShard // one per flusher, and the last for PublishBatch
	tally  unhandled.Tally
	every  time.Duration
	done   chan struct{}
}

func newUnhandledState(shards int, every time.Duration) *unhandledState {
	u := &unhandledState{every: every, done: make(chan struct{})}
	for range shards + 1 {
		u.shards = append(u.shards, &pubShard{})
	}
	return u
}

// batchShard is the shard PublishBatch counts in.
func (u *unhandledState) batchShard() *pubShard { return u.shards[len(u.shards)-1] }

// loop checks every interval until the broker closes.
func (b *Broker) unhandledLoop() {
	u := b.unhandled
	defer close(u.done)
	if u.every < 0 {
		return
	}
	t := time.NewTicker(u.every)
	defer t.Stop()
	for {
		select {
		case <-b.closeCtx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(b.closeCtx, max(u.every, time.Second))
			b.checkUnhandled(ctx)
			cancel()
		}
	}
}

// checkUnhandled counts the entries published since the last check to
// streams without a group, and reports the events that gained some.
func (b *Broker) checkUnhandled(ctx context.Context) {
	u := b.unhandled
	published := map[string]uint64{}
	for _, s := range u.shards {
		for stream, n := range s.take() {
			if core.CountsAsUnhandled(stream) {
				published[stream] += n
			}
		}
	}
	if len(published) > 0 {
		streams := make([]string, 0, len(published))
		cmds := make([]*goredis.XInfoGroupsCmd, 0, len(published))
		_, _ = b.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
			for stream := range published {
				streams = append(streams, stream)
				cmds = append(cmds, pipe.XInfoGroups(ctx, stream))
			}
			return nil
		})
		for i, cmd := range cmds {
			groups, err := cmd.Result()
			switch {
			case err == nil && len(groups) == 0, err != nil && strings.Contains(err.Error(), "no such key"):
				// No group, or the stream is gone (deleted since): nobody
				// reads what was added.
				u.tally.Add(streams[i], published[streams[i]])
			case err != nil:
				b.log.Debug("unhandled: cannot read a stream's groups", "stream", streams[i], "err", err)
			}
		}
	}
	u.tally.ReportDue(ctx, b.log, b.presence.snapshot(), "no group consumes it", b.publishPresenceEvent)
}

// UnhandledCounts returns, per event, how many entries this broker added
// since it opened to a stream that no group reads, as of the latest check
// (every Config.UnhandledInterval).
func (b *Broker) UnhandledCounts() map[string]uint64 { return b.unhandled.tally.Counts() }

var _ core.UnhandledCounter = (*Broker)(nil)

// unhandledReportAge is how old a core.EventUnhandled entry may be for
// UnhandledReports to count it.
const unhandledReportAge = time.Hour

// maxUnhandledHistory is how many EventUnhandled entries UnhandledReports
// reads.
const maxUnhandledHistory = presenceStreamLen

// UnhandledReports reads, across processes, the events published that no
// group consumes: from the latest core.EventUnhandled entries of the past
// hour (every publisher's reports) and the live instances' announcements.
func (b *Broker) UnhandledReports(ctx context.Context) ([]core.UnhandledReport, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	msgs, err := b.client.XRevRangeN(ctx, core.EventUnhandled, "+", "-", maxUnhandledHistory).Result()
	if err != nil {
		return nil, err
	}
	events := make([]core.PresenceEvent, 0, len(msgs))
	since := time.Now().Add(-unhandledReportAge)
	for _, m := range msgs {
		raw, _ := m.Values[dataField].(string)
		var pe core.PresenceEvent
		if core.NewPayload([]byte(raw), core.Msgpack{}).Decode(&pe) == nil && pe.At.After(since) {
			events = append(events, pe)
		}
	}
	list, err := b.readInstances(ctx)
	if err != nil {
		return nil, err
	}
	return core.MergeUnhandled(events, list), nil
}

var _ core.UnhandledReader = (*Broker)(nil)

package embedded

import (
	"sync"

	"github.com/alicebob/miniredis/v2/server"
)

// pubsub delivers PUBLISH itself, in order with each subscriber's own
// replies, as Redis does. miniredis hands each published message to a
// goroutine per subscriber, which writes it whenever it runs: a message
// published before a client's UNSUBSCRIBE could then reach it after the
// UNSUBSCRIBE's reply, and a client that left subscriber mode (ioredis,
// under @spectacles/brokers' calls) took it for the reply to its next
// command.
//
// SUBSCRIBE and PSUBSCRIBE still run in miniredis (which keeps subscriber
// mode, PUBSUB CHANNELS, NUMSUB and NUMPAT), and the hook records the
// subscription once miniredis has written its reply; UNSUBSCRIBE and
// PUNSUBSCRIBE drop it here before miniredis writes theirs. PUBLISH never
// reaches miniredis (so its goroutines never write): the hook writes the
// message to each subscriber under that subscriber's lock, which the
// (un)subscribing takes too, so a message is written wholly before or
// after a change of subscriptions and its reply. Inside MULTI, PUBLISH
// and (P)SUBSCRIBE are left to miniredis, as before.
type pubsub struct {
	mu       sync.Mutex
	channels map[string]map[*server.Peer]*subscriber
	patterns map[string]map[*server.Peer]*subscriber
	peers    map[*server.Peer]*subscriber
}

// subscriber is one connection's subscriptions; mu orders the messages
// written to it with its subscription changes.
type subscriber struct {
	mu       sync.Mutex
	peer     *server.Peer
	channels map[string]struct{}
	patterns map[string]struct{}
}

func newPubsub() *pubsub {
	return &pubsub{
		channels: map[string]map[*server.Peer]*subscriber{},
		patterns: map[string]map[*server.Peer]*subscriber{},
		peers:    map[*server.Peer]*subscriber{},
	}
}

// subscriberOf returns p's subscriber, making it on first use. It runs on
// p's goroutine (the hook's), where the cleanup is registered.
func (ps *pubsub) subscriberOf(p *server.Peer) *subscriber {
	ps.mu.Lock()
	s := ps.peers[p]
	made := s == nil
	if made {
		s = &subscriber{peer: p, channels: map[string]struct{}{}, patterns: map[string]struct{}{}}
		ps.peers[p] = s
	}
	ps.mu.Unlock()
	if made {
		p.OnDisconnect(func() { ps.forget(p) })
	}
	return s
}

// inSubscriberMode reports whether p, a RESP2 connection, has
// subscriptions: PUBLISH is then refused, by miniredis, as on Redis.
func (ps *pubsub) inSubscriberMode(p *server.Peer) bool {
	if p.Resp3 {
		return false
	}
	ps.mu.Lock()
	s := ps.peers[p]
	ps.mu.Unlock()
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.channels)+len(s.patterns) > 0
}

// forget drops every subscription of p: its connection ended.
func (ps *pubsub) forget(p *server.Peer) {
	ps.unsubscribing(p, false, nil)
	ps.unsubscribing(p, true, nil)
	ps.mu.Lock()
	delete(ps.peers, p)
	ps.mu.Unlock()
}

// drop removes p from index[name]. ps.mu is held.
func (ps *pubsub) drop(index map[string]map[*server.Peer]*subscriber, name string, p *server.Peer) {
	if m := index[name]; m != nil {
		delete(m, p)
		if len(m) == 0 {
			delete(index, name)
		}
	}
}

// sets returns s's channels and the index of subscribers by channel, or
// its patterns and the index by pattern when pattern is set.
func (ps *pubsub) sets(s *subscriber, pattern bool) (own map[string]struct{}, index map[string]map[*server.Peer]*subscriber) {
	if pattern {
		return s.patterns, ps.patterns
	}
	return s.channels, ps.channels
}

// subscribed records that p subscribed to names (patterns when pattern is
// set), after miniredis wrote the replies.
func (ps *pubsub) subscribed(p *server.Peer, pattern bool, names []string) {
	s := ps.subscriberOf(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	own, index := ps.sets(s, pattern)
	for _, n := range names {
		own[n] = struct{}{}
		m := index[n]
		if m == nil {
			m = map[*server.Peer]*subscriber{}
			index[n] = m
		}
		m[p] = s
	}
}

// unsubscribing drops p's subscriptions to names (all of them when names
// is empty; patterns when pattern is set), before miniredis writes the
// replies.
func (ps *pubsub) unsubscribing(p *server.Peer, pattern bool, names []string) {
	ps.mu.Lock()
	s := ps.peers[p]
	ps.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	own, index := ps.sets(s, pattern)
	if len(names) == 0 {
		for n := range own {
			names = append(names, n)
		}
	}
	for _, n := range names {
		delete(own, n)
		ps.drop(index, n, p)
	}
}

// delivery is one message to write: to s, for its subscription to
// channel, or to pattern when pattern is set.
type delivery struct {
	s       *subscriber
	pattern string
	isPat   bool
}

// publish writes message to every subscriber of channel, and of a
// pattern that matches it, and returns how many it reached (PUBLISH's
// reply).
func (ps *pubsub) publish(channel, message string) int {
	var to []delivery
	ps.mu.Lock()
	for _, s := range ps.channels[channel] {
		to = append(to, delivery{s: s})
	}
	for pat, subs := range ps.patterns {
		if !globMatch(pat, channel) {
			continue
		}
		for _, s := range subs {
			to = append(to, delivery{s: s, pattern: pat, isPat: true})
		}
	}
	ps.mu.Unlock()
	n := 0
	for _, d := range to {
		if d.s.write(d, channel, message) {
			n++
		}
	}
	return n
}

// write writes the message of d, if s still has the subscription.
func (s *subscriber) write(d delivery, channel, message string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.isPat {
		if _, ok := s.patterns[d.pattern]; !ok {
			return false
		}
	} else if _, ok := s.channels[channel]; !ok {
		return false
	}
	s.peer.Block(func(w *server.Writer) {
		if d.isPat {
			w.WritePushLen(4)
			w.WriteBulk("pmessage")
			w.WriteBulk(d.pattern)
		} else {
			w.WritePushLen(3)
			w.WriteBulk("message")
		}
		w.WriteBulk(channel)
		w.WriteBulk(message)
		w.Flush()
	})
	return true
}

// globMatch reports whether s matches the Redis glob pattern (as PSUBSCRIBE
// takes it): * any run, ? any byte, [abc], [^abc], [a-z] a class, and \x
// the byte x.
func globMatch(pattern, s string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for len(pattern) > 1 && pattern[1] == '*' {
				pattern = pattern[1:]
			}
			if len(pattern) == 1 {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if globMatch(pattern[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if len(s) == 0 {
				return false
			}
			pattern, s = pattern[1:], s[1:]
		case '[':
			if len(s) == 0 {
				return false
			}
			rest, ok := matchClass(pattern[1:], s[0])
			if !ok {
				return false
			}
			pattern, s = rest, s[1:]
		case '\\':
			if len(pattern) >= 2 {
				pattern = pattern[1:]
			}
			fallthrough
		default:
			if len(s) == 0 || s[0] != pattern[0] {
				return false
			}
			pattern, s = pattern[1:], s[1:]
		}
	}
	return len(s) == 0
}

// matchClass matches c against the class that pattern starts (after its
// '['), and returns the pattern after the class's ']' (an unclosed class
// runs to the end, as in Redis).
func matchClass(pattern string, c byte) (rest string, ok bool) {
	not := len(pattern) > 0 && pattern[0] == '^'
	if not {
		pattern = pattern[1:]
	}
	match := false
	for len(pattern) > 0 && pattern[0] != ']' {
		switch {
		case pattern[0] == '\\' && len(pattern) >= 2:
			if pattern[1] == c {
				match = true
			}
			pattern = pattern[2:]
		case len(pattern) >= 3 && pattern[1] == '-':
			lo, hi := pattern[0], pattern[2]
			if lo > hi {
				lo, hi = hi, lo
			}
			if c >= lo && c <= hi {
				match = true
			}
			pattern = pattern[3:]
		default:
			if pattern[0] == c {
				match = true
			}
			pattern = pattern[1:]
		}
	}
	if len(pattern) > 0 {
		pattern = pattern[1:] // the ']'
	}
	return pattern, match != not
}

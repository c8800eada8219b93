package simulator

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// entry is one dispatch of a session's replay buffer. data is the complete
// payload; it is never modified once stored, so it may be read outside the
// session's lock.
type entry struct {
	seq  int64
	t    string
	data []byte
}

// session is a gateway session: its sequence and replay buffer outlive the
// connections that carry them.
type session struct {
	id         string
	shardID    int
	shardCount int
	intents    discord.Intent
	guilds     []*guild
	created    time.Time
	ttl        time.Duration

	dead atomic.Bool // mirrors deadReason != "" for lock-free filtering

	mu         sync.Mutex
	seq        int64   // last sequence number assigned
	ring       []entry // replay buffer, len = capacity
	head       int     // index of the oldest entry
	n          int     // entries held
	conn       *conn   // attached connection, or nil
	connID     int     // id of the last attached connection
	expires    time.Time
	deadReason string
}

// newSessionID returns 32 random hex digits, like Discord's session ids.
func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

func newSession(shardID, shardCount int, intents discord.Intent, guilds []*guild, buffer int, ttl time.Duration) *session {
	return &session{
		id: newSessionID(), shardID: shardID, shardCount: shardCount, intents: intents,
		guilds: guilds, created: time.Now(), ttl: ttl, ring: make([]entry, buffer),
	}
}

// buildDispatch renders an op 0 payload. t must not need JSON escaping
// (Dispatch checks it) and d must be valid JSON.
func buildDispatch(seq int64, t string, d []byte) []byte {
	b := make([]byte, 0, len(d)+len(t)+48)
	b = append(b, `{"t":"`...)
	b = append(b, t...)
	b = append(b, `","s":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"op":0,"d":`...)
	b = append(b, d...)
	return append(b, '}')
}

// killLocked ends the session for good.
func (s *session) killLocked(reason string) {
	if s.deadReason == "" {
		s.deadReason = reason
		s.dead.Store(true)
	}
}

// aliveLocked reports whether the session can still receive dispatches and
// be resumed, ending it if its TTL has passed.
func (s *session) aliveLocked(now time.Time) bool {
	if s.deadReason != "" {
		return false
	}
	if s.conn == nil && !s.expires.IsZero() && now.After(s.expires) {
		s.killLocked("expired")
		return false
	}
	return true
}

// firstLocked returns the oldest sequence number still in the buffer.
func (s *session) firstLocked() int64 {
	return s.seq - int64(s.n) + 1
}

// appendLocked assigns the next sequence number to a dispatch and stores
// it, evicting the oldest entry when the buffer is full.
func (s *session) appendLocked(t string, d []byte) int64 {
	s.seq++
	e := entry{seq: s.seq, t: t, data: buildDispatch(s.seq, t, d)}
	c := len(s.ring)
	if s.n < c {
		s.ring[(s.head+s.n)%c] = e
		s.n++
	} else {
		s.ring[s.head] = e
		s.head = (s.head + 1) % c
	}
	return s.seq
}

// atLocked returns the entry with sequence number seq, which must be in the
// buffer.
func (s *session) atLocked(seq int64) entry {
	return s.ring[(s.head+int(seq-s.firstLocked()))%len(s.ring)]
}

// dispatch appends a dispatch if the session is alive and wakes its
// connection. It reports whether the session took it.
func (s *session) dispatch(t string, d []byte) bool {
	s.mu.Lock()
	if !s.aliveLocked(time.Now()) {
		s.mu.Unlock()
		return false
	}
	s.appendLocked(t, d)
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		c.notify()
	}
	return true
}

// lag returns how many dispatches the attached connection has not yet
// written, and that connection (nil when detached).
func (s *session) lag() (int64, *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.conn
	if c == nil {
		return 0, nil
	}
	c.mu.Lock()
	next := c.nextSeq
	c.mu.Unlock()
	return s.seq - next + 1, c
}

// detachLocked detaches c if it is the attached connection; the session
// then stays resumable for its TTL.
func (s *session) detachLocked(c *conn, now time.Time) {
	if s.conn == c && c != nil {
		s.conn = nil
		s.expires = now.Add(s.ttl)
	}
}

// Event is one dispatch held in a session's replay buffer.
type Event struct {
	// Seq is the dispatch's sequence number.
	Seq int64
	// T is the event name.
	T string
	// Payload is the complete gateway payload as sent, uncompressed.
	Payload []byte
}

// events copies the replay buffer.
func (s *session) events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Event, 0, s.n)
	for q := s.firstLocked(); q <= s.seq; q++ {
		e := s.atLocked(q)
		out = append(out, Event{Seq: e.seq, T: e.t, Payload: append([]byte(nil), e.data...)})
	}
	return out
}

// info describes the session for a Snapshot.
func (s *session) info(now time.Time) SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aliveLocked(now)
	si := SessionInfo{
		ID: s.id, ShardID: s.shardID, ShardCount: s.shardCount, Intents: uint64(s.intents),
		Guilds: len(s.guilds), Created: s.created, Seq: s.seq, FirstSeq: s.firstLocked(),
		Connected: s.conn != nil, ConnID: s.connID, Dead: s.deadReason != "", DeadReason: s.deadReason,
	}
	if s.conn == nil {
		si.ExpiresAt = s.expires
	}
	return si
}

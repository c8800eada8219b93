package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync/atomic"
	"time"
)

// ConnectionRecord describes one websocket connection.
type ConnectionRecord struct {
	// ID numbers connections from 1 in the order they were accepted.
	ID int
	// Path is the request path ("/" or "/resume").
	Path string
	// ResumeURL reports whether the client connected to resume_gateway_url.
	ResumeURL bool
	// Version, Encoding and Compress are the query parameters as sent.
	Version, Encoding, Compress string
	// Opened and Closed bound the connection; Closed is zero while open.
	Opened, Closed time.Time
	// ShardID and ShardCount are set by an Identify or Resume; -1 before.
	ShardID, ShardCount int
	// SessionID is the session the connection last carried.
	SessionID string
	// Dispatches counts dispatches written; LastSeq is the last one's seq
	// (after a Resume, at least the seq the client resumed from).
	Dispatches, LastSeq int64
	// CloseCode is the code of the close that ended the connection (1006
	// for an abrupt one) and CloseByServer who started it.
	CloseCode     int
	CloseByServer bool
	// Abrupt reports a TCP connection dropped without a close frame.
	Abrupt bool
}

// Received is one payload a client sent.
type Received struct {
	// Conn is the connection id; ShardID is -1 before Identify/Resume.
	Conn, ShardID int
	// Time is when the server read it.
	Time time.Time
	// Op is the opcode, or -1 when the payload did not decode.
	Op int
	// D is the raw d, with any "token" value replaced by "[redacted]".
	D json.RawMessage
	// Size is the payload's length in bytes.
	Size int
}

// IdentifyRecord is one Identify and what the server did with it.
type IdentifyRecord struct {
	Conn int
	Time time.Time
	// ShardID and ShardCount as sent ([0, 1] when absent).
	ShardID, ShardCount int
	// Bucket is ShardID % MaxConcurrency.
	Bucket  int
	Intents uint64
	// OS, Browser and Device are the identify properties.
	OS, Browser, Device string
	// Compress and LargeThreshold as sent.
	Compress       bool
	LargeThreshold int
	// Accepted reports a READY; SessionID is the new session's id.
	Accepted  bool
	SessionID string
	// InvalidSession reports an op 9 answer (identify rate limit).
	InvalidSession bool
	// CloseCode is the close code the Identify caused, or 0.
	CloseCode int
}

// ResumeRecord is one Resume and what the server did with it.
type ResumeRecord struct {
	Conn      int
	Time      time.Time
	SessionID string
	Seq       int64
	// ViaResumeURL reports whether the connection used resume_gateway_url.
	ViaResumeURL bool
	// Accepted reports a replay; Replayed is how many dispatches followed
	// Seq (RESUMED not counted).
	Accepted bool
	Replayed int
	// InvalidSession reports an op 9 d:false answer; CloseCode a close.
	InvalidSession bool
	CloseCode      int
	// Reason says why a Resume was refused.
	Reason string
}

// CloseRecord is one end of a connection.
type CloseRecord struct {
	Conn, ShardID int
	Time          time.Time
	// Code is the close code (1006 for an abrupt close, 1005 for a close
	// frame without a code).
	Code   int
	Reason string
	// ByServer reports that the simulator closed; otherwise the client did.
	ByServer bool
	// Abrupt reports a TCP close without a close frame.
	Abrupt bool
}

// HeartbeatRecord is one op 1 a client sent.
type HeartbeatRecord struct {
	Conn, ShardID int
	Time          time.Time
	// Seq is d (nil for null).
	Seq *int64
	// LastSent is the seq of the last dispatch the server had written.
	LastSent int64
	// Acked reports whether the server answered with op 11.
	Acked bool
	// Violation describes what was wrong with d, or is empty.
	Violation string
}

// HeartbeatRequest is one server op 1 (RequestHeartbeat) and the answer.
type HeartbeatRequest struct {
	Conn, ShardID int
	Sent          time.Time
	// Answered reports a client heartbeat after Sent; Delay is how long it took.
	Answered bool
	Delay    time.Duration
}

// SentRecord is one non-dispatch payload the server sent (Hello, ACK, op 1,
// op 7, op 9).
type SentRecord struct {
	Conn, ShardID int
	Time          time.Time
	Op            int
	D             json.RawMessage
}

// SessionInfo describes a session.
type SessionInfo struct {
	ID                  string
	ShardID, ShardCount int
	Intents             uint64
	// Guilds is how many guilds the session owns.
	Guilds  int
	Created time.Time
	// Seq is the last sequence number; FirstSeq the oldest one still in the
	// replay buffer.
	Seq, FirstSeq int64
	// Connected reports an attached connection, ConnID the last one.
	Connected bool
	ConnID    int
	// ExpiresAt is when a detached session stops being resumable.
	ExpiresAt time.Time
	// Dead reports a session that can no longer be resumed, and why.
	Dead       bool
	DeadReason string
}

// Snapshot is a copy of everything the server recorded.
type Snapshot struct {
	Connections       []ConnectionRecord
	Received          []Received
	Identifies        []IdentifyRecord
	Resumes           []ResumeRecord
	Closes            []CloseRecord
	Heartbeats        []HeartbeatRecord
	HeartbeatRequests []HeartbeatRequest
	Sent              []SentRecord
	// Sessions lists every session not yet forgotten, dead ones included,
	// oldest first.
	Sessions []SessionInfo
	// SessionStartRemaining is session_start_limit.remaining.
	SessionStartRemaining int
}

// IdentifyTimes returns the times of the accepted Identifies of bucket, in
// order.
func (s Snapshot) IdentifyTimes(bucket int) []time.Time {
	var out []time.Time
	for _, id := range s.Identifies {
		if id.Accepted && id.Bucket == bucket {
			out = append(out, id.Time)
		}
	}
	return out
}

// Session returns the session with the given id.
func (s Snapshot) Session(id string) (SessionInfo, bool) {
	for _, si := range s.Sessions {
		if si.ID == id {
			return si, true
		}
	}
	return SessionInfo{}, false
}

// Connection returns the connection with the given id.
func (s Snapshot) Connection(id int) (ConnectionRecord, bool) {
	if id >= 1 && id <= len(s.Connections) {
		return s.Connections[id-1], true
	}
	return ConnectionRecord{}, false
}

// ServerCloses returns the close codes the server sent, in order.
func (s Snapshot) ServerCloses() []int {
	var out []int
	for _, c := range s.Closes {
		if c.ByServer {
			out = append(out, c.Code)
		}
	}
	return out
}

// connCounters are a connection's write statistics, updated by its writer.
type connCounters struct {
	dispatches atomic.Int64
	lastSeq    atomic.Int64
}

// records holds everything recorded, guarded by Server.recMu.
type records struct {
	conns      []ConnectionRecord
	counters   []*connCounters
	received   []Received
	identifies []IdentifyRecord
	resumes    []ResumeRecord
	closes     []CloseRecord
	heartbeats []HeartbeatRecord
	hbRequests []HeartbeatRequest
	sent       []SentRecord
}

// record runs f on the records under the lock and wakes WaitFor callers.
func (s *Server) record(f func(r *records)) {
	s.recMu.Lock()
	f(&s.rec)
	close(s.changed)
	s.changed = make(chan struct{})
	s.recMu.Unlock()
}

func cloneRaw(b json.RawMessage) json.RawMessage {
	if b == nil {
		return nil
	}
	return append(json.RawMessage(nil), b...)
}

// Snapshot returns a copy of everything recorded so far.
func (s *Server) Snapshot() Snapshot {
	now := time.Now()
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	remaining := s.startRemainingLocked(now)
	s.mu.Unlock()
	var snap Snapshot
	for _, ss := range sessions {
		snap.Sessions = append(snap.Sessions, ss.info(now))
	}
	sort.Slice(snap.Sessions, func(i, j int) bool {
		if !snap.Sessions[i].Created.Equal(snap.Sessions[j].Created) {
			return snap.Sessions[i].Created.Before(snap.Sessions[j].Created)
		}
		return snap.Sessions[i].ID < snap.Sessions[j].ID
	})
	snap.SessionStartRemaining = remaining

	s.recMu.Lock()
	defer s.recMu.Unlock()
	r := &s.rec
	snap.Connections = append([]ConnectionRecord(nil), r.conns...)
	for i := range snap.Connections {
		snap.Connections[i].Dispatches = r.counters[i].dispatches.Load()
		snap.Connections[i].LastSeq = r.counters[i].lastSeq.Load()
	}
	snap.Received = append([]Received(nil), r.received...)
	for i := range snap.Received {
		snap.Received[i].D = cloneRaw(snap.Received[i].D)
	}
	snap.Identifies = append([]IdentifyRecord(nil), r.identifies...)
	snap.Resumes = append([]ResumeRecord(nil), r.resumes...)
	snap.Closes = append([]CloseRecord(nil), r.closes...)
	snap.Heartbeats = append([]HeartbeatRecord(nil), r.heartbeats...)
	for i := range snap.Heartbeats {
		if q := snap.Heartbeats[i].Seq; q != nil {
			v := *q
			snap.Heartbeats[i].Seq = &v
		}
	}
	snap.HeartbeatRequests = append([]HeartbeatRequest(nil), r.hbRequests...)
	snap.Sent = append([]SentRecord(nil), r.sent...)
	for i := range snap.Sent {
		snap.Sent[i].D = cloneRaw(snap.Sent[i].D)
	}
	return snap
}

// WaitFor waits until cond holds for a snapshot of the server and returns
// that snapshot, or returns the last snapshot and an error wrapping
// ctx.Err(). cond is evaluated after every recorded change and at least
// every 20 ms (sessions' sequence numbers change without a record).
func (s *Server) WaitFor(ctx context.Context, cond func(Snapshot) bool) (Snapshot, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.recMu.Lock()
		ch := s.changed
		s.recMu.Unlock()
		snap := s.Snapshot()
		if cond(snap) {
			return snap, nil
		}
		select {
		case <-ctx.Done():
			return snap, fmt.Errorf("simulator: waiting for a condition: %w", ctx.Err())
		case <-ch:
		case <-tick.C:
		}
	}
}

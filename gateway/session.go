package gateway

import (
	"context"
	"sync"
)

// Session is what a shard needs to resume: it can be saved and restored, so
// that a restarted process resumes instead of identifying again.
type Session struct {
	ID        string `json:"session_id"`
	Seq       int64  `json:"seq"`
	ResumeURL string `json:"resume_gateway_url"`
}

// Resumable reports whether the session can be resumed.
func (s Session) Resumable() bool { return s.ID != "" }

// SessionStore keeps shard sessions between connections and processes.
type SessionStore interface {
	// Load returns the saved session of a shard; a zero Session if none.
	Load(ctx context.Context, shard int) (Session, error)
	// Save stores a shard's session; a zero Session deletes it.
	Save(ctx context.Context, shard int, s Session) error
}

// MemoryStore keeps sessions in this process only. The zero value is ready.
type MemoryStore struct {
	mu       sync.Mutex
	sessions map[int]Session
}

// Load implements SessionStore.
func (m *MemoryStore) Load(_ context.Context, shard int) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sessions[shard], nil
}

// Save implements SessionStore.
func (m *MemoryStore) Save(_ context.Context, shard int, s Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sessions == nil {
		m.sessions = map[int]Session{}
	}
	if !s.Resumable() {
		delete(m.sessions, shard)
		return nil
	}
	m.sessions[shard] = s
	return nil
}

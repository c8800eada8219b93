package simulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spectacles-go/spectacles/core"
)

// Errors returned by Server methods.
var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("simulator: server closed")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("simulator: server already started")
	// ErrNoConnection is returned by a fault injection when the shard has
	// no open connection.
	ErrNoConnection = errors.New("simulator: no open connection for shard")
	// ErrNoSession is returned when no live session matches.
	ErrNoSession = errors.New("simulator: no live session")
)

// Server is a local simulator of Discord's gateway and of GET
// /api/v10/gateway/bot. Create it with New, then Start it; Close stops it.
// All methods are safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	world    *world
	upgrader websocket.Upgrader
	rate     atomic.Uint64 // math.Float64bits of the traffic rate
	rateKick chan struct{} // wakes the generator after SetTrafficRate
	apiPath  *regexp.Regexp

	mu         sync.Mutex
	started    bool
	closed     bool
	host       string // 127.0.0.1:PORT
	httpSrv    *http.Server
	cancel     context.CancelFunc
	conns      map[int]*conn // open connections
	nextConnID int
	sessions   map[string]*session
	buckets    map[int]time.Time // last accepted identify per bucket
	startUsed  int
	startReset time.Time
	op7First   int // connections that get op 7 before Hello
	wg         sync.WaitGroup

	recMu   sync.Mutex
	rec     records
	changed chan struct{}
}

// New validates cfg and returns a server that is not yet listening.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "gateway-simulator"),
		world:    newWorld(cfg),
		rateKick: make(chan struct{}, 1),
		apiPath:  regexp.MustCompile(`^/api(?:/v\d+)?/gateway(/bot)?/?$`),
		conns:    make(map[int]*conn),
		sessions: make(map[string]*session),
		buckets:  make(map[int]time.Time),
		changed:  make(chan struct{}),
		upgrader: websocket.Upgrader{
			ReadBufferSize:  4096,
			WriteBufferSize: 16384,
			CheckOrigin:     func(*http.Request) bool { return true },
		},
	}
	s.rate.Store(math.Float64bits(cfg.TrafficRate))
	return s, nil
}

// Start listens on Config.Addr and serves until Close is called or ctx is
// done.
func (s *Server) Start(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.started {
		return ErrStarted
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("simulator: listen on %s: %w", s.cfg.Addr, err)
	}
	s.started = true
	port := ln.Addr().(*net.TCPAddr).Port
	s.host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.startReset = time.Now().Add(s.cfg.SessionStartReset)
	mux := http.NewServeMux()
	mux.HandleFunc("/api/", s.handleAPI)
	mux.HandleFunc("/", s.handleGateway)
	s.httpSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.runTraffic(runCtx)
	}()
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
			s.stop()
		case <-runCtx.Done():
		}
	}()
	s.log.Info("gateway simulator listening", "url", "http://"+s.host)
	return nil
}

// stop shuts everything down without waiting.
func (s *Server) stop() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	srv, cancel := s.httpSrv, s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if srv != nil {
		_ = srv.Close()
	}
	for _, c := range conns {
		c.drop()
	}
}

// Close stops the server: it stops listening, drops every connection
// without a close frame and waits for all its goroutines.
func (s *Server) Close() error {
	s.stop()
	s.wg.Wait()
	return nil
}

// URL returns the HTTP base URL, http://127.0.0.1:PORT (empty before Start).
func (s *Server) URL() string { return s.hostURL("http://") }

// GatewayURL returns the gateway URL, ws://127.0.0.1:PORT, as GET
// /gateway/bot reports it (empty before Start).
func (s *Server) GatewayURL() string { return s.hostURL("ws://") }

// hostURL returns scheme followed by the listening host:port (empty
// before Start).
func (s *Server) hostURL(scheme string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.host == "" {
		return ""
	}
	return scheme + s.host
}

// ResumeURL returns the resume_gateway_url sent in READY:
// ws://127.0.0.1:PORT/resume. It is served by the same server; connections
// to it are recorded with ResumeURL set.
func (s *Server) ResumeURL() string {
	u := s.GatewayURL()
	if u == "" {
		return ""
	}
	return u + "/resume"
}

// Token returns the accepted bot token.
func (s *Server) Token() string { return s.cfg.Token }

// Config returns the configuration in effect, defaults applied.
func (s *Server) Config() Config {
	cfg := s.cfg
	cfg.TrafficEvents = append([]string(nil), cfg.TrafficEvents...)
	return cfg
}

// SetTrafficRate changes Config.TrafficRate while the server runs.
func (s *Server) SetTrafficRate(perSecond float64) {
	if math.IsNaN(perSecond) {
		return
	}
	s.rate.Store(math.Float64bits(perSecond))
	select {
	case s.rateKick <- struct{}{}:
	default:
	}
}

// startRemainingLocked returns session_start_limit.remaining, resetting the
// window when it has passed. Requires s.mu.
func (s *Server) startRemainingLocked(now time.Time) int {
	if !s.startReset.IsZero() && !now.Before(s.startReset) {
		s.startUsed = 0
		s.startReset = now.Add(s.cfg.SessionStartReset)
	}
	return s.cfg.SessionStartLimit - s.startUsed
}

// handleAPI serves GET /api/v10/gateway and GET /api/v10/gateway/bot, and
// every other /api/ path with Config.REST when it is set.
func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request) {
	m := s.apiPath.FindStringSubmatch(r.URL.Path)
	if m == nil && s.cfg.REST != nil {
		s.cfg.REST.ServeHTTP(w, r)
		return
	}
	if m == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"message": "404: Not Found", "code": 0})
		return
	}
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"message": "405: Method Not Allowed", "code": 0})
		return
	}
	url := s.GatewayURL()
	if m[1] == "" {
		writeJSON(w, http.StatusOK, map[string]any{"url": url})
		return
	}
	if r.Header.Get("Authorization") != "Bot "+s.cfg.Token {
		s.log.Debug("gateway/bot: bad authorization")
		writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "401: Unauthorized", "code": 0})
		return
	}
	now := time.Now()
	s.mu.Lock()
	remaining := s.startRemainingLocked(now)
	resetAfter := s.startReset.Sub(now).Milliseconds()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"url":    url,
		"shards": s.cfg.Shards,
		"session_start_limit": map[string]any{
			"total":           s.cfg.SessionStartLimit,
			"remaining":       remaining,
			"reset_after":     resetAfter,
			"max_concurrency": s.cfg.MaxConcurrency,
		},
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // maps of strings and numbers only
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// handleGateway upgrades a gateway connection and runs it to its end.
func (s *Server) handleGateway(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/", "/resume", "/resume/":
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"message": "404: Not Found", "code": 0})
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "simulator closed", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Debug("upgrade failed", "err", err)
		return
	}
	q := r.URL.Query()
	c := newConn(s, ws, r.URL.Path, q)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ws.Close()
		return
	}
	s.nextConnID++
	c.id = s.nextConnID
	s.conns[c.id] = c
	op7 := s.op7First > 0
	if op7 {
		s.op7First--
	}
	// Under s.mu so that record i is connection i+1.
	s.record(func(rec *records) {
		rec.conns = append(rec.conns, ConnectionRecord{
			ID: c.id, Path: c.path, ResumeURL: c.viaResume, Version: q.Get("v"),
			Encoding: q.Get("encoding"), Compress: q.Get("compress"), Opened: time.Now(),
			ShardID: -1, ShardCount: -1,
		})
		rec.counters = append(rec.counters, c.counters)
	})
	s.mu.Unlock()
	s.log.Debug("connection opened", "conn", c.id, "path", c.path, "compress", c.compress)
	c.run(q, op7)
	s.mu.Lock()
	delete(s.conns, c.id)
	s.mu.Unlock()
}

// liveSessions returns the sessions still alive.
func (s *Server) liveSessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		if !ss.dead.Load() {
			out = append(out, ss)
		}
	}
	return out
}

// pruneLocked forgets dead sessions once there are many sessions, so that
// a long-running simulator does not grow without bound. Requires s.mu.
func (s *Server) pruneLocked() {
	if len(s.sessions) < 1024 {
		return
	}
	for id, ss := range s.sessions {
		if ss.dead.Load() {
			delete(s.sessions, id)
		}
	}
}

// sessionsFor returns the live sessions that own guild id.
func (s *Server) sessionsFor(guildID uint64) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for _, ss := range s.sessions {
		if ss.dead.Load() {
			continue
		}
		if core.ShardID(guildID, ss.shardCount) == ss.shardID {
			out = append(out, ss)
		}
	}
	return out
}

// newestConn returns the most recent open connection identified or
// resumed as shard id.
func (s *Server) newestConn(shard int) (*conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *conn
	for _, c := range s.conns {
		c.mu.Lock()
		id := c.shardID
		c.mu.Unlock()
		if id == shard && !c.closing.Load() && (best == nil || c.id > best.id) {
			best = c
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w %d", ErrNoConnection, shard)
	}
	return best, nil
}

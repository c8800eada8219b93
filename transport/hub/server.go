package hub

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spectacles-go/spectacles/core"
)

// DefaultAddress is where `spectacles hub` listens without HUB_ADDRESS.
const DefaultAddress = "127.0.0.1:7700"

// ServerConfig configures a Server.
type ServerConfig struct {
	// MaxMessageSize bounds one command, in bytes. Default
	// DefaultMaxMessageSize.
	MaxMessageSize int
	// MaxQueuedBytes bounds what waits to be written to one connection; a
	// peer that reads nothing past it is disconnected. Default 64 MiB.
	MaxQueuedBytes int
	// MaxQueueLength bounds the messages waiting for one group under one
	// event (a group with no instance online keeps them); past it the
	// oldest are dropped, as a capped stream trims. Default 100000.
	MaxQueueLength int
	// Logger receives the hub's diagnostics. Default slog.Default().
	Logger *slog.Logger
	// AllowOrigins are the web origins (scheme://host[:port]) whose pages
	// may open a websocket, besides pages of this machine (localhost,
	// 127.0.0.1, [::1]) and clients that send no Origin (programs); "*"
	// allows every page. A page of any other site is refused, so that a
	// site a user visits cannot reach the services on their machine.
	AllowOrigins []string
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxQueuedBytes <= 0 {
		c.MaxQueuedBytes = 64 << 20
	}
	if c.MaxQueueLength <= 0 {
		c.MaxQueueLength = 100000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Server is the hub: it accepts websocket and TCP clients on one address
// and routes DRS commands between them with the Spectacles guarantees (see
// the package documentation). Its state lives in memory: a restart loses
// queued messages. Make one with NewServer.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	mu     sync.Mutex
	st     state
	closed bool
	lns    []net.Listener
	conns  map[*conn]struct{}
	wg     sync.WaitGroup // connection goroutines
	upg    websocket.Upgrader
	stopCh chan struct{}
	once   sync.Once
}

// NewServer returns a hub that serves nothing until Serve or
// ListenAndServe.
func NewServer(cfg ServerConfig) *Server {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "hub"),
		conns:  make(map[*conn]struct{}),
		stopCh: make(chan struct{}),
		upg: websocket.Upgrader{
			ReadBufferSize:  16 << 10,
			WriteBufferSize: 16 << 10,
		},
	}
	s.upg.CheckOrigin = s.checkOrigin
	s.st.init(s)
	return s
}

// Listen opens addr (host:port; DefaultAddress when empty) and returns the
// listener for Serve.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	if addr == "" {
		addr = DefaultAddress
	}
	lc := net.ListenConfig{KeepAlive: 5 * time.Second}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("hub: listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve accepts connections on ln until ctx ends or Close is called, then
// closes every connection and returns nil. A connection whose first byte is
// 'G' is taken as an HTTP request for a websocket upgrade (any path);
// anything else speaks newline-delimited JSON.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return core.ErrClosed
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()

	httpLn := newChanListener(ln.Addr())
	hs := &http.Server{Handler: http.HandlerFunc(s.serveWS), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	var bg sync.WaitGroup
	bg.Go(func() { _ = hs.Serve(httpLn) })
	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stop()

	var err error
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if !s.isClosed() && ctx.Err() == nil {
				err = fmt.Errorf("hub: accept: %w", aerr)
			}
			break
		}
		s.wg.Go(func() { s.sniff(c, httpLn) })
	}
	_ = s.Close()
	httpLn.Close()
	_ = hs.Close()
	bg.Wait()
	s.wg.Wait()
	return err
}

// sniff decides between TCP and websocket by the first byte.
func (s *Server) sniff(c net.Conn, httpLn *chanListener) {
	br := bufio.NewReaderSize(c, 64<<10)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	first, err := br.Peek(1)
	if err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if first[0] == 'G' {
		if !httpLn.offer(&peekedConn{Conn: c, r: br}) {
			_ = c.Close()
		}
		return
	}
	s.run(newTCPFramer(c, br, s.cfg.MaxMessageSize))
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "spectacles hub: connect with a websocket, or send newline-delimited JSON over TCP", http.StatusUpgradeRequired)
		return
	}
	c, err := s.upg.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the request
	}
	f := newWSFramer(c, s.cfg.MaxMessageSize)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(wsPingEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if f.ping() != nil {
					return
				}
			}
		}
	}()
	s.run(f)
	close(done)
}

// checkOrigin accepts programs (no Origin), pages of this machine and
// ServerConfig.AllowOrigins.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range s.cfg.AllowOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	switch host := u.Hostname(); host {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	s.log.Warn("refused a websocket from a web page of another site (allow it with --allow-origin)", "origin", origin)
	return false
}

// run serves one connection until it ends.
func (s *Server) run(f framer) {
	c := newConn(s, f)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = f.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	c.serve()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// connList returns the open connections.
func (s *Server) connList() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// Close stops listening and closes every connection. Serve returns.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		lns := s.lns
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		close(s.stopCh)
		for _, ln := range lns {
			_ = ln.Close()
		}
		for _, c := range conns {
			c.kill()
		}
		s.st.stopTimers()
	})
	return nil
}

// Broadcast sends a command with action and the JSON encoding of body to
// every registered connection, without a key: nothing answers it.
func (s *Server) Broadcast(action string, body any) error {
	raw, err := marshalBody(body)
	if err != nil {
		return err
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	s.st.broadcastLocked(Command{Action: action, Body: raw})
	return nil
}

// Instances returns what the hub knows of every registered instance with
// a group, sorted by group and client.
func (s *Server) Instances() []core.Instance {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	return s.st.instancesLocked()
}

// Stats are the hub's counters.
type Stats struct {
	// Connections is how many clients are connected now.
	Connections int
	// Published counts messages accepted (Fire and Call).
	Published uint64
	// Unhandled counts messages no group handles (answered with drs.error).
	Unhandled uint64
	// Queued is how many messages wait for delivery, over every queue.
	Queued int
	// InFlight is how many deliveries wait for an acknowledgement.
	InFlight int
}

// Stats returns the hub's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	st := Stats{Connections: n, Published: s.st.published, Unhandled: s.st.unhandled}
	for _, byGroup := range s.st.queues {
		for _, q := range byGroup {
			st.Queued += q.len()
			st.InFlight += q.inflight
		}
	}
	return st
}

// chanListener is a net.Listener fed by sniff with the connections that
// speak HTTP.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) offer(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// newSession returns a connection's session name.
func newSession(n uint64) string { return "s" + strconv.FormatUint(n, 36) }

var errSlowPeer = errors.New("the peer does not read what the hub sends")

// Package embedded is the no-configuration Redis server of Spectacles: an
// in-process miniredis, for development and tests, that the spectacles
// command starts when no REDIS_URL is set. It is not a production server:
// it keeps nothing on disk and is gone when its process exits.
//
// It is a package of its own so that importers of the Redis driver
// (transport/redis) do not link miniredis and gopher-lua. It does not
// import the driver.
package embedded

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
)

// Server is the embedded server: an in-process miniredis listening on
// 127.0.0.1 at a free port, keeping nothing on disk. It speaks enough of
// Redis for every feature of the driver transport/redis (streams, consumer
// groups, XAUTOCLAIM, pubsub), for development and tests; it is not a
// production server.
//
// Time runs as on Redis: TTLs (SET PX, EXPIRE) run down with the wall
// clock, to the millisecond, and keys expire when they reach zero; stream entry ids and
// XPENDING idle times come from the wall clock, and so do XINFO
// CONSUMERS' (miniredis sets a consumer's last-seen time on XCLAIM only;
// here XREADGROUP sets it too, as on Redis, when it starts and when a
// blocked one ends); BLOCK timeouts are real time. It answers CLIENT ID and CLIENT UNBLOCK, so a stopping consumer
// does not wait out its XREADGROUP BLOCK; unlike Redis, CLIENT UNBLOCK
// ends the blocked command by closing that client's connection (the
// client sees a connection error instead of a nil reply).
type Server struct {
	mu   sync.Mutex // serialises Restart and Close
	srv  *miniredis.Miniredis
	addr string

	// serving is the server DialContext hands connections to, nil while
	// stopped; held for reading while one is handed over, so that Close
	// and Restart, which take it for writing, see every connection.
	dialMu  sync.RWMutex
	serving *server.Server
	dials   atomic.Uint64 // numbers the in-process connections

	clients clients
}

// Start starts an embedded server; Close stops it.
func Start() (*Server, error) {
	srv := miniredis.NewMiniRedis()
	// TTLs follow the wall clock: miniredis only runs them down on
	// FastForward, which the hook calls before a connection's command
	// once a millisecond or more has passed, so that expired keys go
	// before the next command. (miniredis's ClockTTL would do it on every
	// database access, walking and sorting every key each time.)
	if err := srv.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("embedded redis: start: %w", err)
	}
	e := &Server{srv: srv, addr: srv.Addr()}
	e.clients.init(srv.FastForward)
	// Nobody knows the address yet: no command can come before the hook.
	e.clients.serve(srv.Server())
	e.serving = srv.Server()
	return e, nil
}

// DialContext connects to the server in-process, without TCP, whatever
// network and address it is given: a go-redis Options.Dialer (see the
// Dialer of transport/redis.Config) for clients in the server's process,
// which then cost no system calls. The connection behaves as a TCP one to
// the server (deadlines, close, io.EOF once the server has closed it).
// While the server is stopped (Close, or during Restart) it fails as a
// refused TCP dial does.
func (e *Server) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, &net.OpError{Op: "dial", Net: "embedded", Addr: addr(e.addr), Err: err}
	}
	e.dialMu.RLock()
	defer e.dialMu.RUnlock()
	if e.serving == nil {
		return nil, &net.OpError{Op: "dial", Net: "embedded", Addr: addr(e.addr), Err: syscall.ECONNREFUSED}
	}
	client, srv := newConnPair("embedded-client-"+strconv.FormatUint(e.dials.Add(1), 10), e.addr)
	e.serving.ServeConn(srv)
	return client, nil
}

// stopDials makes DialContext refuse connections until serve.
func (e *Server) stopDials() {
	e.dialMu.Lock()
	e.serving = nil
	e.dialMu.Unlock()
}

// serveDials makes DialContext hand connections to s.
func (e *Server) serveDials(s *server.Server) {
	e.dialMu.Lock()
	e.serving = s
	e.dialMu.Unlock()
}

// Addr returns the server's address, "127.0.0.1:PORT".
func (e *Server) Addr() string { return e.addr }

// URL returns the server's URL, "redis://127.0.0.1:PORT".
func (e *Server) URL() string { return "redis://" + e.addr }

// Restart stops the server, dropping every connection, and starts it again
// at the same address. The data is kept, as miniredis keeps it.
func (e *Server) Restart() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopDials()
	e.srv.Close()
	e.clients.wakers.Wait()
	// miniredis cancels its context on Close and does not renew it on
	// Restart, after which every blocking command (XREADGROUP BLOCK) would
	// never answer. Renew it while no connection is served.
	e.srv.Lock()
	e.srv.Ctx, e.srv.CtxCancel = context.WithCancel(context.Background())
	e.srv.Unlock()
	// The port was just released; retry briefly in case the system has
	// not made it available again yet.
	var err error
	for range 50 {
		if err = e.srv.Restart(); err == nil {
			// A new server.Server, without the hook. A client that
			// reconnects before this line gets an error for CLIENT ID,
			// as from a server without it: its consumer then stops
			// after BLOCK instead of at once.
			e.clients.serve(e.srv.Server())
			e.serveDials(e.srv.Server())
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("embedded redis: restart at %s: %w", e.addr, err)
}

// Close stops the server, ending every blocked command at once. It is
// idempotent.
func (e *Server) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	// miniredis cancels its context first, which ends blocked commands,
	// then closes the connections and waits for their goroutines.
	e.stopDials()
	e.srv.Close()
	e.clients.wakers.Wait()
}

// blockedClients is how many clients are in a blocking command now.
func (e *Server) blockedClients() int {
	e.clients.mu.Lock()
	defer e.clients.mu.Unlock()
	return len(e.clients.blocked)
}

// clients gives miniredis what it lacks of Redis's CLIENT command: CLIENT
// ID and CLIENT UNBLOCK, and runs TTLs down with the wall clock. It runs
// as the server's pre-hook, which sees every command before miniredis
// does, on the connection's goroutine; scripts' commands (EVAL) come to it
// too, with a fresh peer each, while miniredis holds its lock, so the hook
// takes that lock (FastForward, its own commands) only for the commands
// of connections and its own (direct), and lets scripts' commands through
// untouched (a script's blocking command does not block, as on Redis).
// Inside MULTI, CLIENT ID and CLIENT UNBLOCK run at once instead of being
// queued (the driver never sends them there).
type clients struct {
	wakers sync.WaitGroup // wake-up goroutines; Close waits for them

	mu      sync.Mutex
	srv     *server.Server // the one serving now (Restart makes another)
	last    int64
	ids     map[*server.Peer]int64
	peers   map[int64]*server.Peer
	blocked map[*server.Peer]struct{} // peers in a blocking command
	conns   map[*server.Peer]struct{} // peers of connections (not scripts')
	own     map[*server.Peer]struct{} // peers of the hook's own commands, while they run
	inTx    map[*server.Peer]struct{} // connections' peers between MULTI and EXEC/DISCARD
	passing map[*server.Peer]struct{} // peers whose (P)SUBSCRIBE the hook hands to miniredis now

	ps *pubsub // PUBLISH, in order with each subscriber's replies (pubsub.go)

	clock    func(time.Duration) // runs TTLs down (Miniredis.FastForward)
	tickMu   sync.Mutex
	lastTick time.Time
}

func (c *clients) init(clock func(time.Duration)) {
	c.ids = map[*server.Peer]int64{}
	c.peers = map[int64]*server.Peer{}
	c.blocked = map[*server.Peer]struct{}{}
	c.conns = map[*server.Peer]struct{}{}
	c.own = map[*server.Peer]struct{}{}
	c.inTx = map[*server.Peer]struct{}{}
	c.passing = map[*server.Peer]struct{}{}
	c.ps = newPubsub()
	c.clock = clock
	c.lastTick = time.Now()
}

// direct reports whether p's command comes to the hook outside
// miniredis's lock: a connection's or the hook's own, not a script's. A
// connection's peer comes to the hook with no context on its first
// command (miniredis gives it one then), a script's with one.
func (c *clients) direct(p *server.Peer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.conns[p]; ok {
		return true
	}
	if _, ok := c.own[p]; ok {
		return true
	}
	if p.Ctx != nil {
		return false
	}
	c.conns[p] = struct{}{}
	// Run on p's goroutine when its connection ends, like the hook.
	p.OnDisconnect(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.conns, p)
		delete(c.inTx, p)
		delete(c.passing, p)
	})
	return true
}

// has reports whether p is in set.
func (c *clients) has(set map[*server.Peer]struct{}, p *server.Peer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := set[p]
	return ok
}

// mark puts p in set, or takes it out.
func (c *clients) mark(set map[*server.Peer]struct{}, p *server.Peer, in bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if in {
		set[p] = struct{}{}
	} else {
		delete(set, p)
	}
}

// tick runs TTLs down by the time since the last tick, once a
// millisecond or more has passed. Never under miniredis's lock, which it
// takes.
func (c *clients) tick() {
	now := time.Now()
	c.tickMu.Lock()
	elapsed := now.Sub(c.lastTick)
	if elapsed < time.Millisecond {
		c.tickMu.Unlock()
		return
	}
	c.lastTick = now
	c.tickMu.Unlock()
	c.clock(elapsed)
}

// dispatchOwn runs a command of the hook's own, whose reply is dropped.
func (c *clients) dispatchOwn(s *server.Server, args []string) {
	p := discardPeer()
	c.mu.Lock()
	c.own[p] = struct{}{}
	c.mu.Unlock()
	s.Dispatch(p, args)
	c.mu.Lock()
	delete(c.own, p)
	c.mu.Unlock()
}

// serve installs the hook on s, the server miniredis has just started.
func (c *clients) serve(s *server.Server) {
	c.mu.Lock()
	c.srv = s
	c.mu.Unlock()
	s.SetPreHook(c.hook)
}

func (c *clients) server() *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.srv
}

// hook handles CLIENT ID and CLIENT UNBLOCK, PUBLISH and the
// subscriptions (pubsub.go), and tracks which peers block; it returns
// false to let miniredis run the command.
func (c *clients) hook(p *server.Peer, cmd string, args ...string) bool {
	direct := c.direct(p)
	if direct {
		c.tick()
	}
	switch {
	case direct && cmd == "MULTI":
		c.mark(c.inTx, p, true)
		return false
	case direct && (cmd == "EXEC" || cmd == "DISCARD"):
		c.mark(c.inTx, p, false)
		return false
	case cmd == "PUBLISH" && len(args) == 2 && !(direct && (c.has(c.inTx, p) || c.ps.inSubscriberMode(p))):
		// A script's PUBLISH too: delivering takes no lock of miniredis's.
		p.WriteInt(c.ps.publish(args[0], args[1]))
		return true
	case direct && (cmd == "SUBSCRIBE" || cmd == "PSUBSCRIBE") && len(args) > 0 && !c.has(c.inTx, p):
		// miniredis subscribes and replies; then the subscription is
		// recorded, so that no message comes before the reply.
		if !c.dispatchOnce(c.passing, p, cmd, args) {
			return false // the nested Dispatch: miniredis's turn
		}
		c.ps.subscribed(p, cmd == "PSUBSCRIBE", args)
		return true
	case direct && (cmd == "UNSUBSCRIBE" || cmd == "PUNSUBSCRIBE") && !c.has(c.inTx, p):
		c.ps.unsubscribing(p, cmd == "PUNSUBSCRIBE", args)
		return false
	case cmd == "CLIENT" && len(args) > 0 && strings.EqualFold(args[0], "ID"):
		if len(args) != 1 {
			p.WriteError("ERR wrong number of arguments for 'client|id' command")
			return true
		}
		p.WriteInt(int(c.id(p)))
		return true
	case cmd == "CLIENT" && len(args) > 0 && strings.EqualFold(args[0], "UNBLOCK"):
		c.unblock(p, args[1:])
		return true
	case cmd == "XREADGROUP" && direct:
		c.seen(args)
		if !blocks(cmd, args) {
			return false
		}
		ran := c.runBlocking(p, cmd, args)
		c.seen(args)
		return ran
	case direct && blocks(cmd, args):
		return c.runBlocking(p, cmd, args)
	}
	return false
}

// seen records that the consumer of XREADGROUP args (GROUP g c … STREAMS
// k… id…) was seen now, for XINFO CONSUMERS' idle: an XCLAIM of no
// pending id, which miniredis counts as the consumer's activity and which
// changes nothing else. Its reply (an error, for a missing group) is
// dropped. The hook never runs it for a script's XREADGROUP.
func (c *clients) seen(args []string) {
	var group, consumer string
	var keys []string
	for i := 0; i < len(args); i++ {
		switch {
		case strings.EqualFold(args[i], "GROUP") && i+2 < len(args):
			group, consumer = args[i+1], args[i+2]
			i += 2
		case strings.EqualFold(args[i], "STREAMS"):
			rest := args[i+1:]
			keys = rest[:len(rest)/2]
			i = len(args)
		}
	}
	if group == "" {
		return
	}
	s := c.server()
	for _, k := range keys {
		c.dispatchOwn(s, []string{"XCLAIM", k, group, consumer, "0", "0-0", "JUSTID"})
	}
}

// discardPeer is a peer for commands the hook runs for itself, whose
// replies nobody reads: its write buffer is small, as what it writes is
// dropped.
func discardPeer() *server.Peer {
	return server.NewPeer(bufio.NewWriterSize(io.Discard, 64))
}

// id returns p's CLIENT ID, giving it one on first use.
func (c *clients) id(p *server.Peer) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.ids[p]; ok {
		return id
	}
	c.last++
	id := c.last
	c.ids[p], c.peers[id] = id, p
	// Run on p's goroutine when its connection ends, like the hook.
	p.OnDisconnect(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.ids, p)
		delete(c.peers, id)
	})
	return id
}

// unblock is CLIENT UNBLOCK id [TIMEOUT|ERROR]: 1 when the client was
// blocked (its connection is then closed, which ends the command), else 0.
func (c *clients) unblock(p *server.Peer, args []string) {
	if len(args) < 1 || len(args) > 2 {
		p.WriteError("ERR wrong number of arguments for 'client|unblock' command")
		return
	}
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil {
		p.WriteError("ERR value is not an integer or out of range")
		return
	}
	if len(args) == 2 && !strings.EqualFold(args[1], "TIMEOUT") && !strings.EqualFold(args[1], "ERROR") {
		p.WriteError("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
		return
	}
	c.mu.Lock()
	target, ok := c.peers[id]
	if ok {
		_, ok = c.blocked[target]
	}
	if ok {
		target.Close() // the blocked command sees it when woken
	}
	c.mu.Unlock()
	if !ok {
		p.WriteInt(0)
		return
	}
	c.wake()
	p.WriteInt(1)
}

// wake makes blocked commands look at their connection again: any command
// miniredis runs wakes them when it ends. Not on this goroutine, which may
// be a script's, under miniredis's lock.
func (c *clients) wake() {
	s := c.server()
	c.wakers.Go(func() {
		c.dispatchOwn(s, []string{"TIME"})
	})
}

// runBlocking runs a blocking command, counting p as blocked meanwhile. The
// nested Dispatch comes back to the hook, which lets it through.
func (c *clients) runBlocking(p *server.Peer, cmd string, args []string) bool {
	return c.dispatchOnce(c.blocked, p, cmd, args)
}

// dispatchOnce has miniredis run cmd for p with p in set meanwhile, and
// reports true; it reports false, doing nothing, when p is in set already:
// the call is the nested Dispatch coming back to the hook, which must
// then let miniredis run it.
func (c *clients) dispatchOnce(set map[*server.Peer]struct{}, p *server.Peer, cmd string, args []string) bool {
	c.mu.Lock()
	if _, nested := set[p]; nested {
		c.mu.Unlock()
		return false
	}
	set[p] = struct{}{}
	c.mu.Unlock()
	defer c.mark(set, p, false)
	c.server().Dispatch(p, append([]string{cmd}, args...))
	return true
}

// blocks reports whether cmd may block: the B… list and sorted-set
// commands, and XREAD/XREADGROUP with BLOCK.
func blocks(cmd string, args []string) bool {
	switch cmd {
	case "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP":
		return true
	case "XREAD", "XREADGROUP":
		for _, a := range args {
			if strings.EqualFold(a, "STREAMS") {
				return false
			}
			if strings.EqualFold(a, "BLOCK") {
				return true
			}
		}
	}
	return false
}

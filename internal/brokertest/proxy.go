package brokertest

import (
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy in front of a server, for tests that watch or
// tamper with what goes between a client and the server. For each
// connection it accepts it dials the server and hands both ends to its
// pipe function, which forwards the traffic on goroutines it starts with
// Go. When the test ends it closes the listener and every connection and
// waits for those goroutines.
type Proxy struct {
	l      net.Listener
	target string
	pipe   func(p *Proxy, n int, client, server net.Conn)

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

// StartProxy starts a Proxy to target (host:port), closed when t ends.
// pipe gets the proxy (for Go), each connection's number (from 1, in
// accept order) and its two ends; a connection whose server cannot be dialled is closed.
func StartProxy(t testing.TB, target string, pipe func(p *Proxy, n int, client, server net.Conn)) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{l: l, target: target, pipe: pipe}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// Addr is the host:port clients dial instead of the target.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// Go runs f on a goroutine the proxy waits for when it closes.
func (p *Proxy) Go(f func()) { p.wg.Go(f) }

func (p *Proxy) accept() {
	for n := 1; ; n++ {
		client, err := p.l.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.pipe(p, n, client, server)
	}
}

func (p *Proxy) close() {
	_ = p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

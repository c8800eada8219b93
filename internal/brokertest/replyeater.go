package brokertest

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// EaterConfig says which command a ReplyEater swallows the reply to and
// what it does then.
type EaterConfig struct {
	// Triggers are the lower-case strings that mark the command whose
	// reply is swallowed: the first read from the client that contains
	// any of them.
	Triggers []string
	// Drop closes the client's connection after the command was
	// forwarded; otherwise the client is left waiting for the reply.
	Drop bool
	// Once swallows only the first such command over all connections;
	// otherwise each connection swallows its first one.
	Once bool
	// Settle is how long to wait after forwarding the command, so that
	// the server runs it, before dropping the client.
	Settle time.Duration
}

// ReplyEater is a TCP proxy to a server that passes everything through
// until a client sends a command that contains one of its triggers: it
// forwards that command, so that the server runs it, but swallows the
// reply, so that the client cannot tell whether the command happened
// (it did).
type ReplyEater struct {
	// Eaten counts the commands whose reply was swallowed.
	Eaten atomic.Int32

	*Proxy
	cfg      EaterConfig
	triggers [][]byte
	once     atomic.Bool
}

// StartReplyEater starts a ReplyEater in front of target, closed when t
// ends.
func StartReplyEater(t testing.TB, target string, cfg EaterConfig) *ReplyEater {
	t.Helper()
	p := &ReplyEater{cfg: cfg}
	for _, tr := range cfg.Triggers {
		p.triggers = append(p.triggers, []byte(tr))
	}
	p.Proxy = StartProxy(t, target, p.pipe)
	return p
}

// triggered reports whether b holds a trigger whose reply is to be
// swallowed now.
func (p *ReplyEater) triggered(b []byte) bool {
	low := bytes.ToLower(b)
	for _, tr := range p.triggers {
		if bytes.Contains(low, tr) {
			return !p.cfg.Once || p.once.CompareAndSwap(false, true)
		}
	}
	return false
}

// pipe forwards one connection until its client sends a trigger.
func (p *ReplyEater) pipe(px *Proxy, _ int, client, server net.Conn) {
	var swallow atomic.Bool
	px.Go(func() { // server → client, until the trigger
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 && !swallow.Load() {
				if _, werr := client.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	px.Go(func() { // client → server
		defer server.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if p.triggered(buf[:n]) {
					swallow.Store(true)
					_, _ = server.Write(buf[:n])
					p.Eaten.Add(1)
					time.Sleep(p.cfg.Settle) // let the server run it
					if p.cfg.Drop {
						_ = client.Close()
					}
					_, _ = io.Copy(io.Discard, client)
					return
				}
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
}

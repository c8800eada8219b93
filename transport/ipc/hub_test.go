package ipc

import (
	"io"
	"sync"
	"testing"
	"time"
)

// hub connects brokers as if they were processes piped together: whatever
// one broker writes reaches the input of every other broker of the hub.
// The broker's writer hands over whole messages in each Write, and each
// node's input receives them whole, one Write after another, so messages
// from different brokers never interleave. Queues are unbounded: the hub
// adds no back-pressure of its own.
type hub struct {
	mu    sync.Mutex
	nodes map[*node]struct{}
}

func newHub() *hub { return &hub{nodes: make(map[*node]struct{})} }

// node is one broker's place in the hub: its output (Write) and the pump
// that feeds its input.
type node struct {
	h  *hub
	in *io.PipeWriter

	mu     sync.Mutex
	queue  [][]byte
	wake   chan struct{}
	quit   chan struct{}
	pumped chan struct{}
}

// join makes a broker connected to the hub, closed, with its input ended,
// when the test ends.
func (h *hub) join(t testing.TB, cfg Config) *Broker {
	t.Helper()
	pr, pw := io.Pipe()
	n := &node{h: h, in: pw, wake: make(chan struct{}, 1), quit: make(chan struct{}), pumped: make(chan struct{})}
	b, err := New(pr, n, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.nodes[n] = struct{}{}
	h.mu.Unlock()
	go n.pump()
	t.Cleanup(func() {
		_ = b.Close()
		h.mu.Lock()
		delete(h.nodes, n)
		h.mu.Unlock()
		close(n.quit)
		_ = pw.Close()
		<-n.pumped
		select {
		case <-b.readerDone:
		case <-time.After(10 * time.Second):
			t.Error("the reading goroutine did not end")
		}
	})
	return b
}

// Write broadcasts p, whole messages written by n's broker, to the others.
func (n *node) Write(p []byte) (int, error) {
	cp := append([]byte(nil), p...)
	n.h.mu.Lock()
	for o := range n.h.nodes {
		if o != n {
			o.push(cp)
		}
	}
	n.h.mu.Unlock()
	return len(p), nil
}

func (n *node) push(p []byte) {
	n.mu.Lock()
	n.queue = append(n.queue, p)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *node) pump() {
	defer close(n.pumped)
	for {
		select {
		case <-n.wake:
		case <-n.quit:
			return
		}
		n.mu.Lock()
		q := n.queue
		n.queue = nil
		n.mu.Unlock()
		for _, p := range q {
			if _, err := n.in.Write(p); err != nil {
				return
			}
		}
	}
}

package redis

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// command is one command a client sent through a commandLog: the
// connection it came on (numbered from 1, in accept order) and its
// arguments, the name first, upper-cased.
type command struct {
	conn int
	args []string
}

// commandLog is a TCP proxy in front of a Redis server that records every
// command its clients send, so that a test sees exactly what a broker put
// on the wire, on which connection, whoever else uses the server.
type commandLog struct {
	mu   sync.Mutex
	cmds []command
}

// startCommandLog starts a proxy to the server of url and returns it and
// the URL to reach the server through it (url with its host replaced).
func startCommandLog(t testing.TB, url string) (*commandLog, string) {
	t.Helper()
	if !strings.Contains(url, "://") {
		url = "redis://" + url // host:port, as DefaultURL
	}
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	p := &commandLog{}
	px := brokertest.StartProxy(t, u.Host, func(pr *brokertest.Proxy, n int, client, server net.Conn) {
		pr.Go(func() {
			_, _ = io.Copy(client, server)
			_ = client.Close()
		})
		pr.Go(func() {
			p.forward(n, bufio.NewReader(client), server)
			_ = server.Close()
		})
	})
	u.Host = px.Addr()
	return p, u.String()
}

// forward reads commands (RESP arrays of bulk strings, as every client of
// this package sends) from r, records each and writes it to up.
func (p *commandLog) forward(conn int, r *bufio.Reader, up io.Writer) {
	for {
		raw, args, err := readCommand(r)
		if err != nil {
			return
		}
		p.mu.Lock()
		p.cmds = append(p.cmds, command{conn: conn, args: args})
		p.mu.Unlock()
		if _, err := up.Write(raw); err != nil {
			return
		}
	}
}

// readCommand reads one RESP array of bulk strings: its bytes and its
// arguments.
func readCommand(r *bufio.Reader) (raw []byte, args []string, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, nil, err
	}
	raw = append(raw, line...)
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(line, "*"), "\r\n"))
	if err != nil || line[0] != '*' || n < 1 || n > 1<<20 {
		return nil, nil, fmt.Errorf("not a command array: %q", line)
	}
	for range n {
		hdr, err := r.ReadString('\n')
		if err != nil {
			return nil, nil, err
		}
		l, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(hdr, "$"), "\r\n"))
		if err != nil || hdr[0] != '$' || l < 0 || l > 1<<29 {
			return nil, nil, fmt.Errorf("not a bulk string: %q", hdr)
		}
		body := make([]byte, l+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, nil, err
		}
		raw = append(append(raw, hdr...), body...)
		args = append(args, string(body[:l]))
	}
	if len(args) == 0 {
		return nil, nil, errors.New("empty command")
	}
	args[0] = strings.ToUpper(args[0])
	return raw, args, nil
}

// commands returns the commands recorded so far.
func (p *commandLog) commands() []command {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]command(nil), p.cmds...)
}

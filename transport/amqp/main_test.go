package amqp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
	"github.com/spectacles-go/spectacles/transport/amqp/amqptest"
)

// TestMain fails the package when any goroutine outlives the tests: every
// broker, connection and proxy the tests make must be closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The tests talk to a real RabbitMQ at $SPECTACLES_AMQP_URL, or
// DefaultURL (amqptest probes it). Without one they fail under CI
// (CI=true) and are skipped elsewhere. They never touch exchanges or
// queues they did not create: every name is unique to its test and
// deleted when the test ends.

// serverURL returns the URL of the RabbitMQ the tests use.
func serverURL(t testing.TB) string {
	t.Helper()
	return amqptest.URL(t)
}

// proxyServer starts a proxy to the test server (closed when the test
// ends): it returns the server's URL, the proxy and the URL through it.
func proxyServer(t testing.TB) (url string, proxy *tcpProxy, proxied string) {
	t.Helper()
	url = serverURL(t)
	proxy = startProxy(t, hostPort(t, url))
	return url, proxy, withHost(t, url, proxy.addr())
}

// withHost returns raw with its host:port replaced.
func withHost(t testing.TB, raw, hostport string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostport
	return u.String()
}

// hostPort returns the host:port raw dials.
func hostPort(t testing.TB, raw string) string {
	t.Helper()
	u, err := parseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

func unique(prefix string) string { return brokertest.Unique(prefix) }

// testLogger sends the driver's logs to the test log, shown on failure.
func testLogger(t testing.TB) *slog.Logger { return brokertest.Logger(t, slog.LevelDebug) }

// admin is a plain amqp091 connection for setting up, inspecting and
// cleaning up; it stands for the other Spectacles clients too.
type admin struct {
	t    testing.TB
	conn *amqp091.Connection
	mu   sync.Mutex
	ch   *amqp091.Channel
}

// newAdmin connects to url; the connection closes when the test ends,
// after the cleanups registered later (which use it).
func newAdmin(t testing.TB, url string) *admin {
	t.Helper()
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	a := &admin{t: t, conn: conn}
	t.Cleanup(func() { _ = conn.Close() })
	return a
}

// channel returns an open channel, opening a new one after a channel
// error closed the last.
func (a *admin) channel() *amqp091.Channel {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ch == nil || a.ch.IsClosed() {
		ch, err := a.conn.Channel()
		if err != nil {
			a.t.Fatal(err)
		}
		a.ch = ch
	}
	return a.ch
}

// newChannel opens a channel of its own, closed with the connection.
func (a *admin) newChannel() *amqp091.Channel {
	a.t.Helper()
	ch, err := a.conn.Channel()
	if err != nil {
		a.t.Fatal(err)
	}
	return ch
}

// deleteQueues deletes queues this test created; a missing queue is fine.
func (a *admin) deleteQueues(names ...string) {
	for _, q := range names {
		if _, err := a.channel().QueueDelete(q, false, false, false); err != nil {
			a.t.Logf("delete queue %s: %v", q, err)
		}
	}
}

// deleteExchange deletes an exchange this test created.
func (a *admin) deleteExchange(name string) {
	if err := a.channel().ExchangeDelete(name, false, false); err != nil {
		a.t.Logf("delete exchange %s: %v", name, err)
	}
}

// exchange returns a new exchange name, deleted with the queues given to
// the returned function when the test ends.
func (a *admin) exchange(prefix string) (string, func(queues ...string)) {
	name := unique(prefix)
	var (
		mu     sync.Mutex
		queues []string
	)
	a.t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		a.deleteQueues(queues...)
		a.deleteExchange(name)
	})
	return name, func(qs ...string) {
		mu.Lock()
		queues = append(queues, qs...)
		mu.Unlock()
	}
}

// testExchange is the set-up of most tests: the admin connection to url
// and a new exchange named from prefix, deleted when the test ends with
// the queues a consumer of events in subgroup declares and those given to
// track.
func testExchange(t testing.TB, url, prefix, subgroup string, events ...string) (*admin, string, func(queues ...string)) {
	t.Helper()
	adm := newAdmin(t, url)
	exchange, track := adm.exchange(prefix)
	if len(events) > 0 {
		track(spectaclesQueues(exchange, subgroup, events...)...)
	}
	return adm, exchange, track
}

// spectaclesQueues lists the queues a consumer of events declares.
func spectaclesQueues(exchange, subgroup string, events ...string) []string {
	var out []string
	for _, ev := range events {
		out = append(out, QueueName(exchange, subgroup, ev), QueueName(exchange, subgroup, core.DeadLetterEvent(ev)))
	}
	return out
}

// openBroker opens a broker, closed when the test ends.
func openBroker(t testing.TB, cfg Config) *Broker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	return brokertest.Open(t, 10*time.Second, func(ctx context.Context) (*Broker, error) { return Open(ctx, cfg) })
}

func opts(group, client string) core.Options {
	return core.Options{
		Identity:       core.Identity{Group: group, Client: client},
		MessageTimeout: 400 * time.Millisecond,
		CallTimeout:    5 * time.Second,
	}
}

// The helpers the drivers' tests share, under this package's names.
func ctxT(t testing.TB) context.Context { return brokertest.Context(t) }

// collect returns a handler that sends each message on a channel, and
// acknowledges it when ack is set.
func collect(t testing.TB, ack bool) (core.Handler, chan *core.Message) {
	return brokertest.Collect(t, ack)
}

func next(t testing.TB, ch chan *core.Message) *core.Message {
	t.Helper()
	return brokertest.Next(t, ch)
}

func none(t testing.TB, ch chan *core.Message, d time.Duration) {
	t.Helper()
	brokertest.None(t, ch, d)
}

func startConsume(t testing.TB, b *Broker, events []string, h core.Handler) {
	t.Helper()
	brokertest.StartConsume(t, b, events, h)
}

// rawNext waits for a delivery of a plain amqp091 consumer.
func rawNext(t testing.TB, dels <-chan amqp091.Delivery) amqp091.Delivery {
	t.Helper()
	select {
	case d, ok := <-dels:
		if !ok {
			t.Fatal("delivery channel closed")
		}
		return d
	case <-time.After(15 * time.Second):
		t.Fatal("no delivery within 15s")
		return amqp091.Delivery{}
	}
}

// tcpProxy forwards TCP connections to RabbitMQ; the test can cut them,
// and refuse new ones for a while, as a restarting server would. It lets
// reconnection be tested without restarting the shared RabbitMQ.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	down  bool
	wg    sync.WaitGroup
	// hold drops what the server sends while set: the client's frames
	// reach RabbitMQ, its answers (confirms, deliveries) never come back.
	hold atomic.Bool
}

// startProxy listens on a free loopback port; it stops when the test ends.
func startProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			p.pipe(c)
		}()
	}
}

func (p *tcpProxy) pipe(c net.Conn) {
	defer p.forget(c)
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		_ = up.Close()
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer p.forget(up)
	var wg sync.WaitGroup
	copyOne := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
	}
	// Server to client, dropped while held.
	fromServer := func() {
		defer wg.Done()
		defer func() { _ = c.Close(); _ = up.Close() }()
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 && !p.hold.Load() {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(2)
	go copyOne(up, c)
	go fromServer()
	wg.Wait()
}

func (p *tcpProxy) forget(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// cut closes every proxied connection.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// restart cuts every connection and refuses new ones for d.
func (p *tcpProxy) restart(d time.Duration) {
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	p.cut()
	time.Sleep(d)
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *tcpProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	p.cut()
	p.wg.Wait()
}

// TestAMQPTestDefaultURL: amqptest, which cannot import this package,
// uses the driver's default server.
func TestAMQPTestDefaultURL(t *testing.T) {
	if amqptest.DefaultURL != DefaultURL {
		t.Errorf("amqptest.DefaultURL = %q, want DefaultURL %q", amqptest.DefaultURL, DefaultURL)
	}
	if got, err := amqptest.ManagementURL("amqps://u:p@h:5671/v"); err != nil || got != "https://h:15671" {
		t.Errorf("ManagementURL(amqps) = %q, %v", got, err)
	}
}

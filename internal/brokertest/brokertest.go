// Package brokertest holds the helpers the drivers' tests share
// (transport/redis, transport/amqp, transport/ipc and their test
// packages): finding the test server once per test binary, what a
// missing one does under CI, unique names, the test log, contexts,
// collecting deliveries and the contract of Close. Only tests import it.
package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"

	"github.com/spectacles-go/spectacles/core"
)

// Wait bounds how long a helper waits for something that should happen.
// It is generous: the tests assert outcomes, never speed.
const Wait = 15 * time.Second

// InCI reports whether the tests run under CI (CI=true), where a missing
// broker is a failure, never a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing fails t under CI and skips it elsewhere, saying why: err tells
// which broker is missing.
func Missing(t testing.TB, err error) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true and %v: a missing broker under CI is a failure", err)
	}
	t.Skipf("skipping: %v (under CI=true this fails)", err)
}

// Probe looks for a test server once per test binary; it holds no test's
// state. The zero Probe is ready to use.
type Probe struct {
	once sync.Once
	addr string
	err  error
}

// Find returns what find returned the first time any caller asked.
func (p *Probe) Find(find func() (string, error)) (string, error) {
	p.once.Do(func() { p.addr, p.err = find() })
	return p.addr, p.err
}

// ErrOff is returned by FindServer when the environment variable turns the
// real server off.
var ErrOff = errors.New("the real server is turned off")

// FindServer names the server of the tests: the value of the environment
// variable env, or def when it is empty. The value off chooses no server
// (an error wrapping ErrOff). ping must answer within 2 seconds for the
// server to count.
func FindServer(env, def, off string, ping func(ctx context.Context, addr string) error) (string, error) {
	addr := os.Getenv(env)
	if off != "" && addr == off {
		return "", fmt.Errorf("%w: %s=%s", ErrOff, env, off)
	}
	if addr == "" {
		addr = def
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := ping(ctx, addr); err != nil {
		return "", err
	}
	return addr, nil
}

// Unique returns prefix followed by a random suffix, for names tests share
// a server with.
func Unique(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// Logger sends logs at level and above to the test log, shown on failure.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// Context returns a context that ends after Wait or with the test.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	t.Cleanup(cancel)
	return ctx
}

// Collect returns a handler that sends each message on a channel; with
// ack set it acknowledges it first, failing the test when that fails.
func Collect(t testing.TB, ack bool) (core.Handler, chan *core.Message) {
	ch := make(chan *core.Message, 4096)
	return func(ctx context.Context, m *core.Message) {
		if ack {
			if err := m.Ack(ctx); err != nil {
				t.Errorf("ack %s: %v", m.ID, err)
			}
		}
		ch <- m
	}, ch
}

// Next waits up to Wait for a message on ch.
func Next(t testing.TB, ch <-chan *core.Message) *core.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(Wait):
		t.Fatalf("no message within %s", Wait)
		return nil
	}
}

// None fails the test when a message arrives on ch within d.
func None(t testing.TB, ch <-chan *core.Message, d time.Duration) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected message: event %s id %s (deliveries %d) raw %q", m.Event, m.ID, m.Deliveries, m.Raw)
	case <-time.After(d):
	}
}

// StartConsume consumes events with h until the test ends.
func StartConsume(t testing.TB, b core.Broker, events []string, h core.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := b.Consume(ctx, events, h); err != nil {
		t.Fatal(err)
	}
}

// CheckClose checks the contract of Close on b, a broker of its own: a
// consumer of ev answers "pong" and one of silent never answers; between
// starting them and the first call, beforeCall (when not nil) sets up
// what the driver's test adds. A call to ev works; a call to silent
// pending at Close ends with core.ErrClosed; a second Close returns nil;
// a call after Close fails with core.ErrClosed.
func CheckClose(t testing.TB, b core.Broker, ev, silent string, beforeCall func()) {
	t.Helper()
	if err := b.Consume(context.Background(), []string{ev}, func(ctx context.Context, m *core.Message) {
		_ = m.Reply(ctx, "pong")
		_ = m.Ack(ctx)
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Consume(context.Background(), []string{silent}, func(context.Context, *core.Message) {}); err != nil {
		t.Fatal(err)
	}
	if beforeCall != nil {
		beforeCall()
	}
	if _, err := b.Call(Context(t), ev, "ping"); err != nil {
		t.Fatal(err)
	}
	pending := make(chan error, 1)
	go func() {
		_, err := b.Call(context.Background(), silent, "nobody answers")
		pending <- err
	}()
	time.Sleep(100 * time.Millisecond) // the call is sent (not a timing assertion)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-pending; !errors.Is(err, core.ErrClosed) {
		t.Errorf("pending call: err = %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.Call(Context(t), ev, "ping"); !errors.Is(err, core.ErrClosed) {
		t.Errorf("call after close: %v", err)
	}
}

// URLSecret is the password in the bad URLs of CheckURLErrors.
const URLSecret = "pa55w0rdXYZ"

// CheckURLErrors checks that open fails for every URL of urls (each holds
// URLSecret) with an error that wraps sentinel and shows no part of the
// password.
func CheckURLErrors(t testing.TB, sentinel error, urls []string, open func(url string) error) {
	t.Helper()
	for _, url := range urls {
		err := open(url)
		if err == nil {
			t.Errorf("opening %q succeeded", url)
			continue
		}
		if strings.Contains(err.Error(), URLSecret) || strings.Contains(err.Error(), "pa55") {
			t.Errorf("error for %q shows the password: %v", url, err)
		}
		if !errors.Is(err, sentinel) {
			t.Errorf("error for %q does not wrap %v: %v", url, sentinel, err)
		}
	}
}

// CheckDialError checks that open, given a URL with a password whose
// server (port 1 on loopback) refuses connections, fails within 5
// seconds with an error that names the server but not the password.
func CheckDialError(t testing.TB, url string, open func(ctx context.Context, url string) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !strings.Contains(url, ":s3cretpw@127.0.0.1:1") {
		t.Fatalf("CheckDialError: %q is not a URL of user:s3cretpw@127.0.0.1:1", url)
	}
	err := open(ctx, url)
	if err == nil {
		t.Fatal("Open succeeded")
	}
	if strings.Contains(err.Error(), "s3cretpw") {
		t.Errorf("error shows the password: %v", err)
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("error does not name the server: %v", err)
	}
}

// NoLeaks fails t when, after every cleanup registered later has run, a
// goroutine that did not run when NoLeaks was called still runs. Call it
// first, in a test that is not parallel.
func NoLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// Open opens a broker with open, given a context of timeout, and closes
// it when the test ends; a failure to open fails the test.
func Open[B io.Closer](t testing.TB, timeout time.Duration, open func(ctx context.Context) (B, error)) B {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	b, err := open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Msgpack encodes v with the msgpack library the peers' codecs match.
func Msgpack(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// WaitErr waits up to Wait for an error on ch and fails the test unless
// it wraps every one of want; what names the operation in messages. It
// returns the error.
func WaitErr(t testing.TB, ch <-chan error, what string, want ...error) error {
	t.Helper()
	select {
	case err := <-ch:
		for _, w := range want {
			if !errors.Is(err, w) {
				t.Errorf("%s: %v, want %v", what, err, w)
			}
		}
		return err
	case <-time.After(Wait):
		t.Fatalf("%s did not return within %s", what, Wait)
		return nil
	}
}

// WaitUnhandledReport waits up to Wait for reader to report event
// unhandled with count messages from the one publisher publisher
// ("group/client"), failing the test if it does not, or if it ever
// reports handled.
func WaitUnhandledReport(t testing.TB, ctx context.Context, reader core.UnhandledReader, event, handled string, count uint64, publisher string) {
	t.Helper()
	for deadline := time.Now().Add(Wait); ; time.Sleep(100 * time.Millisecond) {
		list, err := reader.UnhandledReports(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got *core.UnhandledReport
		for i := range list {
			if list[i].Event == handled {
				t.Fatalf("a consumed event is reported: %+v", list[i])
			}
			if list[i].Event == event {
				got = &list[i]
			}
		}
		if got != nil && got.Count == count && len(got.Publishers) == 1 && got.Publishers[0] == publisher {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("reports %+v, want %s: %d by %s", list, event, count, publisher)
		}
	}
}

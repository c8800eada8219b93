package ipc

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// peerEnv names the role the test binary plays when a test starts it as a
// child process (see process_test.go).
const peerEnv = "SPECTACLES_IPC_TEST_PEER"

// TestMain fails the package when any goroutine outlives the tests: every
// broker the tests make must be closed and its input ended. Started as a
// peer process, the binary runs that peer instead of the tests.
func TestMain(m *testing.M) {
	if role := os.Getenv(peerEnv); role != "" {
		os.Exit(runPeer(role))
	}
	goleak.VerifyTestMain(m)
}

// testLogger sends the driver's logs to the test log, shown on failure.
func testLogger(t testing.TB, level slog.Level) *slog.Logger { return brokertest.Logger(t, level) }

// logCapture records log messages, for tests that assert what was logged.
type logCapture struct {
	mu   sync.Mutex
	msgs []string
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.msgs = append(c.msgs, string(p))
	c.mu.Unlock()
	return len(p), nil
}

// count returns how many records contain s.
func (c *logCapture) count(s string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

func (c *logCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.msgs, "")
}

func captureLogger(t testing.TB) (*slog.Logger, *logCapture) {
	c := &logCapture{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("driver logs:\n%s", c)
		}
	})
	return slog.New(slog.NewTextHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug})), c
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer = brokertest.SyncBuffer

// opts are the options of the package's own tests: one handler at a time,
// so that tests can expect messages in input order (a pool of handlers
// may finish them in any order).
func opts(t testing.TB, group, client string) core.Options {
	return core.Options{
		Identity:    core.Identity{Group: group, Client: client},
		CallTimeout: 5 * time.Second,
		Concurrency: 1,
		Logger:      testLogger(t, slog.LevelDebug),
	}
}

// newBroker makes a broker closed when the test ends; when in is an
// *io.PipeReader, its writer is closed after the broker and the test
// waits for the reading goroutine.
func newBroker(t testing.TB, r io.Reader, w io.Writer, cfg Config) *Broker {
	t.Helper()
	b, err := New(r, w, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if pr, ok := r.(*io.PipeReader); ok {
			_ = pr.CloseWithError(io.EOF)
		}
		select {
		case <-b.readerDone:
		case <-time.After(10 * time.Second):
			t.Error("the reading goroutine did not end")
		}
	})
	return b
}

// pipeBroker makes a broker whose input the test writes to.
func pipeBroker(t testing.TB, w io.Writer, cfg Config) (*Broker, *io.PipeWriter) {
	t.Helper()
	pr, pw := io.Pipe()
	return newBroker(t, pr, w, cfg), pw
}

func ctxT(t testing.TB) context.Context { return brokertest.Context(t) }

// collect returns a handler that sends each message on a channel.
func collect() (core.Handler, chan *core.Message) {
	ch := make(chan *core.Message, 4096)
	return func(ctx context.Context, m *core.Message) {
		_ = m.Ack(ctx)
		ch <- m
	}, ch
}

func next(t testing.TB, ch <-chan *core.Message) *core.Message {
	t.Helper()
	return brokertest.Next(t, ch)
}

func none(t testing.TB, ch <-chan *core.Message, d time.Duration) {
	t.Helper()
	brokertest.None(t, ch, d)
}

func writeString(t testing.TB, w io.Writer, s string) {
	t.Helper()
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatal(err)
	}
}

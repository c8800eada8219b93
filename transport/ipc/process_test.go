package ipc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// Peer processes: the test binary started again with peerEnv set runs one
// of these over its standard input and output, as a real node would.
const (
	formatEnv = "SPECTACLES_IPC_TEST_FORMAT"
	countEnv  = "SPECTACLES_IPC_TEST_COUNT"
)

// runPeer runs role and returns the process's exit code.
func runPeer(role string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("peer", role)
	format, err := ParseFormat(os.Getenv(formatEnv))
	if err != nil {
		log.Error("bad format", "err", err)
		return 2
	}
	count, _ := strconv.Atoi(os.Getenv(countEnv))
	b, err := Stdio(Config{Options: core.Options{
		Identity: core.Identity{Group: role, Client: "peer"},
		Logger:   log,
	}, Format: format})
	if err != nil {
		log.Error("stdio broker", "err", err)
		return 2
	}
	defer b.Close()
	ctx := context.Background()

	switch role {
	case "responder":
		// Answers "ping" calls and re-publishes "echo" as "echoed", until
		// its input ends.
		err = b.Consume(ctx, []string{"ping", "echo"}, func(ctx context.Context, m *core.Message) {
			data, err := m.Data()
			if err != nil {
				log.Error("undecodable", "err", err)
				return
			}
			if m.Event == "ping" {
				err = m.Reply(ctx, map[string]any{"pong": data, "pid": os.Getpid()})
			} else {
				_, err = b.Publish(ctx, "echoed", data)
			}
			if err != nil {
				log.Error("answering", "err", err)
			}
		})
		if err != nil {
			log.Error("consume", "err", err)
			return 1
		}
		<-b.Done()
	case "producer":
		// Publishes count "tick" messages and exits.
		for i := range count {
			if _, err := b.Publish(ctx, "tick", map[string]any{"n": i}); err != nil {
				log.Error("publish", "err", err)
				return 1
			}
		}
	case "counter":
		// Counts "tick" messages until its input ends, then publishes the
		// total.
		var n, sum atomic.Int64
		err = b.Consume(ctx, []string{"tick"}, func(ctx context.Context, m *core.Message) {
			var v struct {
				N int64 `json:"n"`
			}
			if err := m.Decode(&v); err != nil {
				log.Error("decode", "err", err)
				return
			}
			n.Add(1)
			sum.Add(v.N)
		})
		if err != nil {
			log.Error("consume", "err", err)
			return 1
		}
		<-b.Done()
		if _, err := b.Publish(ctx, "total", map[string]any{"count": n.Load(), "sum": sum.Load()}); err != nil {
			log.Error("publish", "err", err)
			return 1
		}
	default:
		log.Error("unknown role")
		return 2
	}
	if err := b.Close(); err != nil {
		log.Error("close", "err", err)
		return 1
	}
	return 0
}

// peerCommand prepares the test binary as a peer process.
func peerCommand(t *testing.T, role string, format Format, count int) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), peerEnv+"="+role, formatEnv+"="+format.String(), countEnv+"="+strconv.Itoa(count))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	return cmd, &stderr
}

func waitPeer(t *testing.T, cmd *exec.Cmd, stderr *bytes.Buffer) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("peer %v: %v\n%s", cmd.Env[len(cmd.Env)-3:], err, stderr)
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Errorf("peer %v did not exit\n%s", cmd.Env[len(cmd.Env)-3:], stderr)
	}
}

// TestProcessCallAndPublish talks to a child process over its standard
// input and output (real OS pipes): calls get answered, publishes come
// back, and closing the child's input makes it exit cleanly.
func TestProcessCallAndPublish(t *testing.T) {
	for _, format := range []Format{JSONLines, Msgpack} {
		t.Run(format.String(), func(t *testing.T) {
			cmd, stderr := peerCommand(t, "responder", format, 0)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			b, err := New(stdout, stdin, Config{Options: opts(t, "parent", "p"), Format: format})
			if err != nil {
				t.Fatal(err)
			}
			h, got := collect()
			if err := b.Consume(ctxT(t), []string{"echoed"}, h); err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				p, err := b.Call(ctxT(t), "ping", map[string]any{"i": i})
				if err != nil {
					t.Fatalf("call %d: %v\n%s", i, err, stderr)
				}
				data, err := p.Data()
				if err != nil {
					t.Fatal(err)
				}
				m := data.(map[string]any)
				if pong := m["pong"].(map[string]any); pong["i"] != int64(i) {
					t.Fatalf("reply %v to call %d", data, i)
				}
				if m["pid"] != int64(cmd.Process.Pid) {
					t.Fatalf("reply from pid %v, want the child's %d", m["pid"], cmd.Process.Pid)
				}
			}
			if _, err := b.Publish(ctxT(t), "echo", map[string]any{"hello": "child"}); err != nil {
				t.Fatal(err)
			}
			m := next(t, got)
			if data, err := m.Data(); err != nil || data.(map[string]any)["hello"] != "child" {
				t.Fatalf("echoed %v, %v", data, err)
			}

			// End the child's input: it drains, closes and exits; then our
			// input ends. (Wait closes the stdout pipe: read it to the end
			// first.)
			_ = stdin.Close()
			select {
			case <-b.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("Done not closed: the child did not exit\n%s", stderr)
			}
			if !errors.Is(b.Err(), io.EOF) {
				t.Errorf("Err = %v, want EOF", b.Err())
			}
			waitPeer(t, cmd, stderr)
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			<-b.readerDone
		})
	}
}

// TestProcessPipeline runs "producer | counter" as two processes joined
// by an OS pipe, like "spectacles gateway | my-bot", and reads the total
// the counter publishes when its input ends.
func TestProcessPipeline(t *testing.T) {
	const n = 2000
	for _, format := range []Format{JSONLines, Msgpack} {
		t.Run(format.String(), func(t *testing.T) {
			producer, perr := peerCommand(t, "producer", format, n)
			counter, cerr := peerCommand(t, "counter", format, 0)
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			producer.Stdout = pw
			counter.Stdin = pr
			out, err := counter.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := counter.Start(); err != nil {
				t.Fatal(err)
			}
			if err := producer.Start(); err != nil {
				t.Fatal(err)
			}
			_ = pr.Close()
			_ = pw.Close()

			b := newBroker(t, out, &bytes.Buffer{}, Config{Options: opts(t, "parent", "p"), Format: format})
			h, got := collect()
			if err := b.Consume(ctxT(t), []string{"total"}, h); err != nil {
				t.Fatal(err)
			}
			waitPeer(t, producer, perr)
			m := next(t, got)
			var total struct {
				Count int64 `json:"count"`
				Sum   int64 `json:"sum"`
			}
			if err := m.Decode(&total); err != nil {
				t.Fatal(err)
			}
			if want := int64(n * (n - 1) / 2); total.Count != n || total.Sum != want {
				t.Fatalf("counter saw %d messages summing %d, want %d summing %d", total.Count, total.Sum, n, want)
			}
			<-b.Done() // before Wait, which closes the stdout pipe
			if err := b.Err(); !errors.Is(err, io.EOF) {
				t.Errorf("Err after the counter exited = %v, want EOF", err)
			}
			waitPeer(t, counter, cerr)
		})
	}
}

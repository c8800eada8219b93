package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/internal/brokertest"
)

func bulk(s string) string { return "$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n" }

// xreply builds an XREADGROUP reply of one stream.
func xreply(stream string, entries ...string) string {
	return "*1\r\n*2\r\n" + bulk(stream) + "*" + strconv.Itoa(len(entries)) + "\r\n" + strings.Join(entries, "")
}

func xentry(id string, fields ...string) string {
	s := "*2\r\n" + bulk(id) + "*" + strconv.Itoa(len(fields)) + "\r\n"
	for _, f := range fields {
		s += bulk(f)
	}
	return s
}

func TestRESPStreams(t *testing.T) {
	big := strings.Repeat("x", arenaSolo+100)
	reply := xreply("ev",
		xentry("1-0", "data", "hello"),
		xentry("2-0", "h", "v", "data", big),
		"*2\r\n"+bulk("3-0")+"*-1\r\n", // deleted, still pending
		xentry("4-0"),                  // no fields at all
		xentry("5-0", "data", ""),
	)
	second := xreply("ev", xentry("6-0", "data", "again"))
	rr := newRESPReader(strings.NewReader(reply+"*-1\r\n"+second), 4096)
	var a arena
	got, err := rr.streams(nil, &a, []string{"ev"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("%d entries, want 5: %+v", len(got), got)
	}
	if e := got[0]; e.stream != "ev" || e.id != "1-0" || string(e.raw) != "hello" || e.headers != nil || e.deleted {
		t.Errorf("entry 0: %+v", e)
	}
	if e := got[1]; string(e.raw) != big || e.headers["h"] != "v" || len(e.headers) != 1 {
		t.Errorf("entry 1: raw %d bytes, headers %v", len(e.raw), e.headers)
	}
	if e := got[2]; !e.deleted || e.id != "3-0" {
		t.Errorf("entry 2: %+v", e)
	}
	if e := got[3]; e.deleted || e.raw != nil {
		t.Errorf("entry 3: %+v", e)
	}
	if e := got[4]; e.raw == nil || len(e.raw) != 0 {
		t.Errorf("entry 4: %+v", e)
	}
	// A payload's capacity ends with it: appending never writes into the
	// next one.
	p0 := got[0].raw
	_ = append(p0, "XXXXXXXX"...)
	if string(got[0].raw) != "hello" || cap(p0) != len(p0) {
		t.Errorf("payload capacity %d, len %d", cap(p0), len(p0))
	}
	// The null reply after it: nothing read, no error.
	more, err := rr.streams(nil, &a, nil)
	if err != nil || len(more) != 0 {
		t.Fatalf("null reply: %v, %v", more, err)
	}
	// The ids of a read are cut from one string per read: a later read
	// leaves them as they were.
	later, err := rr.streams(nil, &a, nil)
	if err != nil || len(later) != 1 || later[0].id != "6-0" || later[0].stream != "ev" {
		t.Fatalf("second read: %+v, %v", later, err)
	}
	for i, want := range []string{"1-0", "2-0", "3-0", "4-0", "5-0"} {
		if got[i].id != want {
			t.Errorf("after a second read, entry %d's id is %q, want %q", i, got[i].id, want)
		}
	}
}

func TestRESPStreamsRejects(t *testing.T) {
	for name, in := range map[string]string{
		"error reply":       "-NOGROUP No such key 'ev' or consumer group\r\n",
		"not an array":      "+OK\r\n",
		"stream of 3":       "*1\r\n*3\r\n",
		"odd fields":        xreply("ev", "*2\r\n"+bulk("1-0")+"*1\r\n"+bulk("data")),
		"huge bulk":         "*1\r\n*2\r\n$999999999999\r\n",
		"bulk beyond limit": "*1\r\n*2\r\n$536870913\r\n",
		"negative length":   "*1\r\n*2\r\n$-5\r\nev\r\n",
		"short body":        "*1\r\n*2\r\n$10\r\nev\r\n",
		"no crlf after":     "*1\r\n*2\r\n$2\r\nevXX*0\r\n",
		"bare newline":      "*1\n",
		"truncated":         xreply("ev", xentry("1-0", "data", "hello"))[:30],
		"huge array":        "*99999999999\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			rr := newRESPReader(strings.NewReader(in), 4096)
			var a arena
			_, err := rr.streams(nil, &a, nil)
			if err == nil {
				t.Fatal("no error")
			}
			var rerr respError
			if name == "error reply" {
				if !errors.As(err, &rerr) || !isNoGroup(err) {
					t.Fatalf("want the NOGROUP reply error, got %v", err)
				}
				var gerr goredis.Error
				if !errors.As(err, &gerr) {
					t.Fatalf("a reply error is not a go-redis Error: %T", err)
				}
				return
			}
			if errors.As(err, &rerr) {
				t.Fatalf("a malformed reply reported as a reply error: %v", err)
			}
		})
	}
}

// A bulk string that announces more than arrives allocates by what arrived.
func TestRESPBulkAllocatesByArrival(t *testing.T) {
	in := "$400000000\r\n" + strings.Repeat("y", 1000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rr := newRESPReader(strings.NewReader(in), 4096)
	var a arena
	if _, err := rr.bulk(&a); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("want unexpected EOF, got %v", err)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Fatalf("reading 1,000 bytes of a bulk announced as 400 MB allocated %d bytes", grew)
	}
}

func FuzzRESPStreams(f *testing.F) {
	f.Add([]byte(xreply("ev", xentry("1-0", "data", "hello"), xentry("2-0", "h", "v", "data", "x"))))
	f.Add([]byte("*-1\r\n"))
	f.Add([]byte("-ERR x\r\n"))
	f.Add([]byte(xreply("ev", "*2\r\n"+bulk("3-0")+"*-1\r\n")))
	f.Fuzz(func(t *testing.T, in []byte) {
		rr := newRESPReader(bytes.NewReader(in), 64)
		var a arena
		got, err := rr.streams(nil, &a, []string{"ev"})
		if err != nil {
			return
		}
		total := 0
		for _, e := range got {
			total += len(e.raw) + len(e.id)
			for k, v := range e.headers {
				total += len(k) + len(v)
			}
		}
		if total > len(in) {
			t.Fatalf("entries hold %d bytes from %d read", total, len(in))
		}
	})
}

// The reader's connection against a real server: AUTH with a user and a
// password, SELECT, CLIENT ID, an XACK and an XREADGROUP in one write, a
// reply error that leaves the connection usable, and a BLOCK that ends.
func TestReadConnAuthAndExchange(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if brokertest.InCI() {
			t.Fatal("redis-server is required (CI=true) but not on PATH")
		}
		t.Skip("redis-server is not on PATH: the authenticated server cannot be started")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--requirepass", "s3cret")
	brokertest.DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	ctx := context.Background()
	root := goredis.NewClient(&goredis.Options{Addr: addr, Password: "s3cret", MaxRetries: -1})
	defer root.Close()
	deadline := time.Now().Add(10 * time.Second)
	for root.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the authenticated redis-server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := root.Do(ctx, "ACL", "SETUSER", "alice", "on", ">wonder", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	opt := &goredis.Options{Addr: addr, Username: "alice", Password: "wonder", DB: 3, DialTimeout: time.Second}
	admin := goredis.NewClient(opt)
	defer admin.Close()
	if err := admin.XGroupCreateMkStream(ctx, "ev", "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	id1 := admin.XAdd(ctx, &goredis.XAddArgs{Stream: "ev", Values: []any{"data", "one"}}).Val()
	admin.XAdd(ctx, &goredis.XAddArgs{Stream: "ev", Values: []any{"data", "two"}})

	if _, err := dialReadConn(ctx, &goredis.Options{Addr: addr, Username: "alice", Password: "wrong"}); err == nil ||
		strings.Contains(err.Error(), "wrong") {
		t.Fatalf("a wrong password: %v (no error, or an error naming the password)", err)
	}
	rc, err := dialReadConn(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if rc.id == 0 {
		t.Error("no CLIENT ID learnt")
	}
	read := &goredis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{"ev", ">"}, Count: 1, Block: -1}
	got, err := rc.exchange("g", nil, read, nil)
	if err != nil || len(got) != 1 || got[0].id != id1 || string(got[0].raw) != "one" {
		t.Fatalf("first read: %+v, %v", got, err)
	}
	// The ack of the first and the read of the second, in one write.
	o := &op{kind: opXAck, stream: "ev", id: id1, done: make(chan struct{}, 1)}
	read.Count = 10
	got, err = rc.exchange("g", groupAcks([]*op{o}), read, nil)
	if err != nil || len(got) != 1 || string(got[0].raw) != "two" {
		t.Fatalf("second read: %+v, %v", got, err)
	}
	<-o.done
	if o.err != nil {
		t.Fatalf("ack: %v", o.err)
	}
	if n := admin.XPending(ctx, "ev", "g").Val().Count; n != 1 {
		t.Fatalf("%d pending after the ack, want 1", n)
	}
	// One XACK on its own, as a handler the reader runs acks.
	if err := rc.ack("g", "ev", got[0].id); err != nil {
		t.Fatalf("ack alone: %v", err)
	}
	if n := admin.XPending(ctx, "ev", "g").Val().Count; n != 0 {
		t.Fatalf("%d pending after the second ack, want 0", n)
	}
	// A reply error: the connection stays usable.
	bad := &goredis.XReadGroupArgs{Group: "nogroup", Consumer: "c", Streams: []string{"ev", ">"}, Block: -1}
	if _, err := rc.exchange("g", nil, bad, nil); !isNoGroup(err) {
		t.Fatalf("want NOGROUP, got %v", err)
	}
	// A BLOCK with nothing to read ends with nothing, no error.
	read.Block = 50 * time.Millisecond
	got, err = rc.exchange("g", nil, read, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("blocking read: %+v, %v", got, err)
	}
}

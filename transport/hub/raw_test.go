package hub

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// rawPeer speaks the JSON commands by hand, as a non-Go client would.
type rawPeer struct {
	t    *testing.T
	send func(string)
	recv func() map[string]any
}

func wsPeer(t *testing.T, addr string) *rawPeer {
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = c.Close() })
	return &rawPeer{t: t,
		send: func(s string) {
			if err := c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
				t.Fatal(err)
			}
		},
		recv: func() map[string]any {
			_ = c.SetReadDeadline(time.Now().Add(brokertest.Wait))
			_, b, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			return decodeMap(t, b)
		}}
}

func tcpPeer(t *testing.T, addr string) *rawPeer {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r := bufio.NewReader(c)
	return &rawPeer{t: t,
		send: func(s string) {
			if _, err := c.Write([]byte(s + "\n")); err != nil {
				t.Fatal(err)
			}
		},
		recv: func() map[string]any {
			_ = c.SetReadDeadline(time.Now().Add(brokertest.Wait))
			line, err := r.ReadBytes('\n')
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			return decodeMap(t, line)
		}}
}

func decodeMap(t *testing.T, b []byte) map[string]any {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("hub sent %q: %v", b, err)
	}
	return m
}

// expect reads the next command and checks its action and key.
func (p *rawPeer) expect(action, key string) map[string]any {
	p.t.Helper()
	m := p.recv()
	if m["action"] != action || (key != "" && m["key"] != key) {
		p.t.Fatalf("got %v, want action %s key %q", m, action, key)
	}
	return m
}

func reason(m map[string]any) string {
	b, _ := m["body"].(map[string]any)
	s, _ := b["reason"].(string)
	return s
}

// TestRawWebsocketClient drives the hub with hand-written JSON commands
// over a websocket: an unregistered command, registration, a Call nobody
// answers, a handler that answers with drs.response, a broadcast, and a
// bad command, each answered, none closing the socket.
func TestRawWebsocketClient(t *testing.T) {
	for _, tc := range []struct {
		name string
		peer func(*testing.T, string) *rawPeer
	}{{"ws", wsPeer}, {"tcp", tcpPeer}} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startHub(t)
			caller := tc.peer(t, addr)

			caller.send(`{"action":"PING","body":{"n":1},"key":"early"}`)
			if m := caller.expect(ActionError, "early"); !strings.Contains(reason(m), "register first") {
				t.Errorf("unregistered: %v", m)
			}
			caller.send(`{"action":"drs.register","key":"r1","body":{"client":"page","version":"0.1.0"}}`)
			caller.expect(ActionResponse, "r1")

			caller.send(`{"action":"PING","body":{"n":1},"key":"c1"}`)
			if m := caller.expect(ActionError, "c1"); !strings.Contains(reason(m), "no online instance") {
				t.Errorf("unhandled call: %v", m)
			}

			service := tc.peer(t, addr)
			service.send(`{"action":"drs.register","key":"r","body":{"group":"pinger","client":"p1","version":"1.2.3","actions":["PING"],"calls":["PING"]}}`)
			service.expect(ActionResponse, "r")

			caller.send(`{"action":"PING","body":{"n":2},"key":"c2"}`)
			d := service.expect("PING", "")
			if d["call"] != true || d["body"].(map[string]any)["n"] != float64(2) {
				t.Fatalf("delivery %v", d)
			}
			service.send(`{"action":"drs.response","key":"` + d["key"].(string) + `","body":{"pong":2}}`)
			r := caller.expect(ActionResponse, "c2")
			if r["body"].(map[string]any)["pong"] != float64(2) {
				t.Errorf("reply %v", r)
			}

			// A handler's drs.exception reaches the caller with its reason.
			caller.send(`{"action":"PING","body":{"n":3},"key":"c3"}`)
			d = service.expect("PING", "")
			service.send(`{"action":"drs.exception","key":"` + d["key"].(string) + `","body":{"reason":"boom"}}`)
			if m := caller.expect(ActionException, "c3"); reason(m) != "boom" {
				t.Errorf("exception %v", m)
			}

			// Settling twice: the second is refused with the key, not dropped.
			service.send(`{"action":"drs.ack","key":"` + d["key"].(string) + `"}`)
			service.expect(ActionError, d["key"].(string))

			caller.send(`{"action":"drs.broadcast","key":"b","body":{"action":"NOTICE","body":{"hello":true}}}`)
			// The broadcast goes out before the hub answers the request.
			caller.expect("NOTICE", "")
			caller.expect(ActionResponse, "b")
			service.expect("NOTICE", "")

			caller.send(`not json`)
			caller.expect(ActionError, "")
			caller.send(`{"action":"drs.nope","key":"z"}`)
			caller.expect(ActionError, "z")
			caller.send(`{"action":"drs.ping","key":"alive"}`)
			caller.expect(ActionResponse, "alive")
		})
	}
}

// TestGoClientAndRawPeer: a Go client's Call is answered by a raw
// websocket service, and a raw Fire reaches a Go consumer.
func TestGoClientAndRawPeer(t *testing.T) {
	_, addr := startHub(t)
	service := wsPeer(t, addr)
	service.send(`{"action":"drs.register","key":"r","body":{"group":"js","client":"page","actions":["ECHO"]}}`)
	service.expect(ActionResponse, "r")

	goClient := openClient(t, "ws://"+addr, core.Options{Identity: core.Identity{Group: "go", Client: "g1"}})
	got := make(chan *core.Message, 1)
	brokertest.StartConsume(t, goClient, []string{"FROM_JS"}, func(ctx context.Context, m *core.Message) {
		_ = m.Ack(ctx)
		got <- m
	})
	done := make(chan error, 1)
	go func() {
		p, err := goClient.Call(brokertest.Context(t), "ECHO", map[string]any{"x": 1})
		if err == nil {
			var v map[string]any
			err = p.Decode(&v)
			if err == nil && v["echo"] != float64(1) {
				err = fmt.Errorf("reply %v", v)
			}
		}
		done <- err
	}()
	d := service.expect("ECHO", "")
	service.send(`{"action":"drs.response","key":"` + d["key"].(string) + `","body":{"echo":1}}`)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	service.send(`{"action":"FROM_JS","body":{"hi":"go"}}`)
	m := brokertest.Next(t, got)
	if data, err := m.Data(); err != nil || data.(map[string]any)["hi"] != "go" {
		t.Fatalf("data %v err %v", data, err)
	}
}

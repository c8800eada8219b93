package amqp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// TestInstancesFromManagementAnswers reads instances from management API
// answers as RabbitMQ gives them, a closing consumer's channel_details
// being [] rather than an object, and connections of other clients
// without the presence property.
func TestInstancesFromManagementAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/vhosts/%2F/connections", "/api/vhosts///connections":
			_, _ = w.Write([]byte(`[{"name":"c1","client_properties":{"spectacles_presence":"{\"group\":\"audit\",\"client\":\"w1\",\"version\":\"1.0\",\"calls\":[\"REQ\"],\"session\":\"s1\",\"exchange\":\"gw\",\"subgroup\":\"audit\"}"}},
				{"name":"c2","client_properties":{"product":"other"}}]`))
		case "/api/consumers/%2F", "/api/consumers//":
			_, _ = w.Write([]byte(`[{"queue":{"name":"gw:audit:MESSAGE_CREATE"},"channel_details":{"connection_name":"c1"}},
				{"queue":{"name":"gw:audit:REQ"},"channel_details":{"connection_name":"c1"}},
				{"queue":{"name":"gw:audit:GONE"},"channel_details":[]},
				{"queue":{"name":"gw:other:X"},"channel_details":{"connection_name":"c2"}}]`))
		default:
			t.Errorf("unexpected request %s", r.URL.Path)
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	cfg := Config{URL: "amqp://guest:guest@127.0.0.1:5672/", ManagementURL: srv.URL}
	m, err := newMgmt(&cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	b := &Broker{cfg: cfg}
	b.insp.m = m
	list, err := b.managementInstances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("instances %+v, want audit/w1 only", list)
	}
	in := list[0]
	if in.Group != "audit" || in.Client != "w1" || in.Version != "1.0" || in.Session != "s1" ||
		!slices.Equal(in.Events, []string{"MESSAGE_CREATE", "REQ"}) || !slices.Equal(in.Calls, []string{"REQ"}) {
		t.Errorf("instance %+v", in)
	}
}

// The child process of TestPresenceKilled: with these set, TestPresenceChild
// opens a broker on the exchange, consumes the event as the group (its
// subgroup too), says "ready" and waits to be killed.
const (
	childExchangeEnv = "SPECTACLES_TEST_PRESENCE_EXCHANGE"
	childGroupEnv    = "SPECTACLES_TEST_PRESENCE_GROUP"
	childEventEnv    = "SPECTACLES_TEST_PRESENCE_EVENT"
)

func TestPresenceChild(t *testing.T) {
	exchange := os.Getenv(childExchangeEnv)
	if exchange == "" {
		t.Skip("the child process of TestPresenceKilled")
	}
	group := os.Getenv(childGroupEnv)
	o := opts(group, "child")
	o.Announce.Version = "child-1.0"
	b, err := Open(context.Background(), Config{Options: o, URL: serverURL(t), Exchange: exchange, Subgroup: group, ManagementURL: ManagementOff})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Consume(context.Background(), []string{os.Getenv(childEventEnv)}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) }); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	select {} // until killed
}

// TestPresenceKilled: a child process consumes, announcing itself with the
// default heartbeat and TTL, and is killed with -9. Two live instances
// watch; between them its disconnection ("lost") and its group's going
// offline are published once each, within the TTL (12 s) of the kill, and
// the instances another process lists show it while alive, then not
// (or stale) within that time. The management API is off throughout.
func TestPresenceKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a killed instance to be found gone (about 10 s)")
	}
	t.Parallel()
	url := serverURL(t)
	adm, exchange, _ := testExchange(t, url, "spectacles-killed", "")
	group, ev := unique("killed"), unique("EV")
	var queues []string
	for _, sub := range []string{group, "watch-1", "watch-2", "collect"} {
		queues = append(queues, spectaclesQueues(exchange, sub, append(core.PresenceEvents(), ev)...)...)
	}
	t.Cleanup(func() { adm.deleteQueues(queues...) })
	open := func(sub string, announce bool) *Broker {
		o := opts(unique(sub), sub)
		o.Announce.Disabled = !announce
		return openBroker(t, Config{Options: o, URL: url, Exchange: exchange, Subgroup: sub, ManagementURL: ManagementOff})
	}
	// Two watchers: live instances, each checking the others.
	for _, sub := range []string{"watch-1", "watch-2"} {
		w := open(sub, true)
		brokertest.StartConsume(t, w, []string{unique("nothing")}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) })
	}
	got := make(chan core.PresenceEvent, 32)
	collector := open("collect", false)
	brokertest.StartConsume(t, collector, core.PresenceEvents(), func(ctx context.Context, m *core.Message) {
		var pe core.PresenceEvent
		if err := m.Decode(&pe); err != nil {
			t.Error(err)
		}
		_ = m.Ack(ctx)
		if pe.Instance.Group == group {
			got <- pe
		}
	})

	cmd := exec.Command(os.Args[0], "-test.run=^TestPresenceChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childExchangeEnv+"="+exchange, childGroupEnv+"="+group, childEventEnv+"="+ev)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("child said %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("child: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("child not ready\n%s", stderr.String())
	}

	expect := func(within time.Duration, want ...string) {
		t.Helper()
		var have []string
		deadline := time.After(within)
		for len(have) < len(want) {
			select {
			case pe := <-got:
				have = append(have, pe.Event+" "+pe.Reason)
			case <-deadline:
				t.Fatalf("presence events of the child %v, want %v", have, want)
			}
		}
		slices.Sort(have)
		slices.Sort(want)
		if !slices.Equal(have, want) {
			t.Fatalf("presence events of the child %v, want %v", have, want)
		}
	}
	expect(10*time.Second, core.EventInstanceConnected+" ", core.EventGroupOnline+" ")

	listed := func() (core.Instance, bool) {
		t.Helper()
		list, err := collector.Instances(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range list {
			if in.Group == group {
				return in, true
			}
		}
		return core.Instance{}, false
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		in, ok := listed()
		if ok {
			if in.Client != "child" || in.Version != "child-1.0" || !slices.Equal(in.Events, []string{ev}) || in.PID != cmd.Process.Pid || in.Stale(time.Now()) {
				t.Fatalf("the child listed as %+v", in)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the live child is not listed")
		}
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	expect(core.DefaultPresenceTTL, core.EventInstanceDisconnected+" lost", core.EventGroupOffline+" lost")
	t.Logf("departure published %s after kill -9", time.Since(killed).Round(100*time.Millisecond))
	if in, ok := listed(); ok && !in.Stale(time.Now()) && time.Since(killed) > core.DefaultPresenceTTL {
		t.Errorf("the killed child is still listed live: %+v", in)
	}
	// Once each: no watcher publishes it again.
	select {
	case pe := <-got:
		t.Fatalf("published again: %s %s", pe.Event, pe.Reason)
	case <-time.After(2 * core.DefaultHeartbeat):
	}
	if in, ok := listed(); ok {
		t.Errorf("the killed child is still listed after its departure: %+v", in)
	}
}

// TestPresenceConcurrentJoins: instances of one group that join and leave
// all at once (each on its own connection) take the group's lock in turn,
// so that the group comes online once and goes offline once, and every
// instance is reported connected and disconnected once. No management
// API.
func TestPresenceConcurrentJoins(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	adm, exchange, _ := testExchange(t, url, "spectacles-joins", "")
	group, ev := unique("crowd"), unique("EV")
	queues := spectaclesQueues(exchange, group, ev)
	queues = append(queues, spectaclesQueues(exchange, "collect", core.PresenceEvents()...)...)
	t.Cleanup(func() { adm.deleteQueues(queues...) })
	co := opts(unique("collect"), "c")
	co.Announce.Disabled = true
	collector := openBroker(t, Config{Options: co, URL: url, Exchange: exchange, Subgroup: "collect", ManagementURL: ManagementOff})
	got := make(chan string, 64)
	brokertest.StartConsume(t, collector, core.PresenceEvents(), func(ctx context.Context, m *core.Message) {
		var pe core.PresenceEvent
		if err := m.Decode(&pe); err != nil {
			t.Error(err)
		}
		_ = m.Ack(ctx)
		if pe.Instance.Group == group {
			got <- pe.Event + " " + pe.Reason
		}
	})
	const n = 5
	brokers := make([]*Broker, n)
	for i := range brokers {
		o := opts(group, fmt.Sprint("i", i))
		o.Announce.Heartbeat = 200 * time.Millisecond
		brokers[i] = openBroker(t, Config{Options: o, URL: url, Exchange: exchange, Subgroup: group, ManagementURL: ManagementOff})
	}
	var wg sync.WaitGroup
	for _, b := range brokers {
		wg.Go(func() {
			if err := b.Consume(context.Background(), []string{ev}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	count := func(want map[string]int) {
		t.Helper()
		have := map[string]int{}
		total := 0
		for _, c := range want {
			total += c
		}
		deadline := time.After(brokertest.Wait)
		for i := 0; i < total; i++ {
			select {
			case e := <-got:
				have[e]++
			case <-deadline:
				t.Fatalf("presence events %v, want %v", have, want)
			}
		}
		select {
		case e := <-got:
			have[e]++
		case <-time.After(time.Second):
		}
		if !maps.Equal(have, want) {
			t.Fatalf("presence events %v, want %v", have, want)
		}
	}
	count(map[string]int{core.EventInstanceConnected + " ": n, core.EventGroupOnline + " ": 1})
	for _, b := range brokers {
		wg.Go(func() { _ = b.Close() })
	}
	wg.Wait()
	count(map[string]int{core.EventInstanceDisconnected + " closed": n, core.EventGroupOffline + " closed": 1})
}

// TestPresenceAfterReconnect: an instance whose connection is cut (its
// exclusive queue goes with it) comes back in its group when it
// reconnects: the others may have reported it lost meanwhile, and then
// report it connected again; it is listed again, and its Close reports it
// disconnected and its group offline.
func TestPresenceAfterReconnect(t *testing.T) {
	t.Parallel()
	url, proxy, proxied := proxyServer(t)
	adm, exchange, _ := testExchange(t, url, "spectacles-presence-cut", "")
	group, ev := unique("cut"), unique("EV")
	queues := spectaclesQueues(exchange, group, ev)
	for _, sub := range []string{"watch", "collect"} {
		queues = append(queues, spectaclesQueues(exchange, sub, append(core.PresenceEvents(), ev)...)...)
	}
	t.Cleanup(func() { adm.deleteQueues(queues...) })
	announce := func(o core.Options) core.Options {
		o.Announce.Heartbeat, o.Announce.TTL = 200*time.Millisecond, 2*time.Second
		return o
	}
	watcher := openBroker(t, Config{Options: announce(opts(unique("watch"), "w")), URL: url, Exchange: exchange, Subgroup: "watch", ManagementURL: ManagementOff})
	brokertest.StartConsume(t, watcher, []string{ev}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) })
	co := opts(unique("collect"), "c")
	co.Announce.Disabled = true
	collector := openBroker(t, Config{Options: co, URL: url, Exchange: exchange, Subgroup: "collect", ManagementURL: ManagementOff})
	got := make(chan string, 64)
	brokertest.StartConsume(t, collector, core.PresenceEvents(), func(ctx context.Context, m *core.Message) {
		var pe core.PresenceEvent
		if err := m.Decode(&pe); err != nil {
			t.Error(err)
		}
		_ = m.Ack(ctx)
		if pe.Instance.Group == group {
			got <- pe.Event + " " + pe.Reason
		}
	})
	inst := announce(opts(group, "i"))
	inst.Logger = testLogger(t)
	b, err := Open(ctxT(t), Config{Options: inst, URL: proxied, Exchange: exchange, Subgroup: group, ManagementURL: ManagementOff})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	brokertest.StartConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) })
	next := func() string {
		t.Helper()
		select {
		case e := <-got:
			return e
		case <-time.After(brokertest.Wait):
			t.Fatal("no presence event")
			return ""
		}
	}
	joined := map[string]bool{next(): true, next(): true}
	if !joined[core.EventInstanceConnected+" "] || !joined[core.EventGroupOnline+" "] {
		t.Fatalf("joining: %v", joined)
	}
	proxy.restart(1500 * time.Millisecond)
	// Listed again, fresh, once it is back.
	for deadline := time.Now().Add(brokertest.Wait); ; time.Sleep(200 * time.Millisecond) {
		list, err := collector.Instances(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(list, func(in core.Instance) bool {
			return in.Group == group && !in.Stale(time.Now()) && time.Since(in.LastSeen) < 500*time.Millisecond
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not listed after reconnecting: %+v", list)
		}
	}
	time.Sleep(time.Second) // the watcher's checks settle
	// Whatever the blip gave (nothing, or lost then connected again), the
	// events pair up: the group is online and the instance in it.
	var blip []string
	for len(got) > 0 {
		blip = append(blip, <-got)
	}
	count := func(e string) int {
		n := 0
		for _, x := range blip {
			if strings.HasPrefix(x, e+" ") {
				n++
			}
		}
		return n
	}
	if count(core.EventInstanceDisconnected) != count(core.EventInstanceConnected) || count(core.EventGroupOffline) != count(core.EventGroupOnline) {
		t.Fatalf("events during the cut do not pair up: %v", blip)
	}
	t.Logf("events during the cut: %v", blip)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	left := map[string]bool{next(): true, next(): true}
	if !left[core.EventInstanceDisconnected+" closed"] || !left[core.EventGroupOffline+" closed"] {
		t.Fatalf("leaving: %v", left)
	}
}

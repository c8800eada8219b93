package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/transport/amqp/amqptest"
)

// The Inspector tests use the shared RabbitMQ and its management API (the
// ManagementURL derived from the test URL). Without the API (the
// rabbitmq_management plugin is off on a fresh RabbitMQ) they fail under
// CI and are skipped elsewhere, as without RabbitMQ: amqptest probes it
// once, quickly.

// mgmtTestURL returns the test URL after checking that its management
// API answers.
func mgmtTestURL(t testing.TB) string {
	t.Helper()
	return amqptest.WithManagement(t)
}

// eventually polls check until it passes or timeout passes; the API's
// statistics lag by up to collect_statistics_interval (5 s by default).
func eventually(t testing.TB, timeout time.Duration, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// inspectOpts are options for brokers whose handlers block: nothing is
// handed back during a test.
func inspectOpts(group, client string) core.Options {
	o := opts(group, client)
	o.MessageTimeout = time.Minute
	o.Concurrency = 1
	return o
}

// blockUntilEnd returns a handler that blocks until the test ends,
// leaving its message unacknowledged. The cleanup that releases it is
// registered now, so it must be called after the brokers were opened
// (cleanups run last first: the handlers return before Close waits for
// them).
func blockUntilEnd(t testing.TB) core.Handler {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return func(context.Context, *core.Message) { <-release }
}

func findStream(list []core.StreamInfo, name string) (core.StreamInfo, bool) {
	for _, s := range list {
		if s.Name == name {
			return s, true
		}
	}
	return core.StreamInfo{}, false
}

func TestInspectTopology(t *testing.T) {
	t.Parallel()
	url := mgmtTestURL(t)
	adm := newAdmin(t, url)
	exchange, track := adm.exchange("spectacles-inspect")
	const ev = "EV"
	foreign := unique("spectacles-inspect-foreign")
	track(spectaclesQueues(exchange, "a", ev)...)
	track(spectaclesQueues(exchange, "b", ev)...)
	track(foreign)
	qa, qb := QueueName(exchange, "a", ev), QueueName(exchange, "b", ev)

	a := openBroker(t, Config{Options: inspectOpts("svc", "ca"), URL: url, Exchange: exchange, Subgroup: "a", Prefetch: 2})
	b := openBroker(t, Config{Options: inspectOpts("svc", "cb"), URL: url, Exchange: exchange, Subgroup: "b", Prefetch: 3})
	in := openBroker(t, Config{Options: opts("svc", "inspector"), URL: url, Exchange: exchange})
	h := blockUntilEnd(t)
	startConsume(t, a, []string{ev}, h)
	startConsume(t, b, []string{ev}, h)
	// A peer's queue of its own name, bound for the event, never consumed.
	if _, err := adm.channel().QueueDeclare(foreign, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := adm.channel().QueueBind(foreign, ev, exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := in.Publish(ctxT(t), ev, i); err != nil {
			t.Fatal(err)
		}
	}
	ctx := ctxT(t)

	// a: 2 unacknowledged (prefetch), 3 ready; b: 3 and 2; foreign: 5 ready.
	want := map[string]core.GroupInfo{
		qa:      {Name: qa, Consumers: 1, Pending: 2, Lag: 3},
		qb:      {Name: qb, Consumers: 1, Pending: 3, Lag: 2},
		foreign: {Name: foreign, Consumers: 0, Pending: 0, Lag: 5},
	}
	eventually(t, 20*time.Second, func() (bool, string) {
		gs, err := in.Groups(ctx, ev)
		if err != nil {
			return false, err.Error()
		}
		if len(gs) != len(want) {
			return false, fmt.Sprintf("groups %+v", gs)
		}
		for _, g := range gs {
			if g != want[g.Name] {
				return false, fmt.Sprintf("groups %+v, want %+v", gs, want)
			}
		}
		return true, ""
	})
	streams, err := in.Streams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.StatsErr(); err != nil {
		t.Errorf("stats with the management API: %v", err)
	}
	if s, ok := findStream(streams, ev); !ok || s.Length != 15 || s.Groups != 3 || s.FirstID != "" || s.LastID != "" {
		t.Errorf("stream %s = %+v (found %v), want length 15, 3 groups", ev, s, ok)
	}
	dl := core.DeadLetterEvent(ev)
	if s, ok := findStream(streams, dl); !ok || s.Length != 0 || s.Groups != 2 {
		t.Errorf("stream %s = %+v (found %v), want length 0, 2 groups (a's and b's dead-letter queues)", dl, s, ok)
	}
	if len(streams) != 2 {
		t.Errorf("streams = %+v, want %s and %s only", streams, ev, dl)
	}

	// Consumers by queue name and by subgroup; Pending comes from the
	// channel, whose statistics lag too.
	for _, tc := range []struct {
		group, client string
		pending       int64
	}{{qa, "ca", 2}, {"b", "cb", 3}} {
		eventually(t, 15*time.Second, func() (bool, string) {
			cs, err := in.Consumers(ctx, ev, tc.group)
			if err != nil {
				return false, err.Error()
			}
			if len(cs) != 1 || cs[0].Pending != tc.pending {
				return false, fmt.Sprintf("consumers of %s = %+v, want one with %d pending", tc.group, cs, tc.pending)
			}
			return true, ""
		})
		cs, _ := in.Consumers(ctx, ev, tc.group)
		name := cs[0].Name
		if !strings.HasPrefix(name, tc.client+".") || !strings.HasSuffix(name, " @ spectacles svc/"+tc.client+" (consume)") {
			t.Errorf("consumer of %s named %q, want its tag (%s.…) and its connection's name", tc.group, name, tc.client)
		}
	}
	if cs, err := in.Consumers(ctx, ev, foreign); err != nil || len(cs) != 0 {
		t.Errorf("consumers of %s = %+v, %v; want none", foreign, cs, err)
	}
	if _, err := in.Consumers(ctx, ev, "nosuch"); err == nil || errors.Is(err, core.ErrUnsupported) {
		t.Errorf("consumers of a missing queue: %v, want a plain error", err)
	}
	if gs, err := in.Groups(ctx, "NOSUCH"); err != nil || len(gs) != 0 {
		t.Errorf("groups of an unbound event = %+v, %v", gs, err)
	}

	info, err := in.Server(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != "amqp" || info.Version == "" || info.RoundTrip <= 0 || info.Embedded {
		t.Errorf("server = %+v", info)
	}
	if u, _ := parseURL(url); u.Password != "" && strings.Contains(info.Address, ":"+u.Password+"@") {
		t.Errorf("address %q shows the password", info.Address)
	}
}

// TestInspectorOnly: the AMQP broker is a core.Inspector and no
// core.PendingInspector, so that callers see from its type that it cannot
// list or settle the messages of other consumers.
func TestInspectorOnly(t *testing.T) {
	var in core.Inspector = (*Broker)(nil)
	if _, ok := in.(core.PendingInspector); ok {
		t.Fatal("*amqp.Broker is a core.PendingInspector")
	}
}

func TestInspectUnsupported(t *testing.T) {
	t.Parallel()
	url := mgmtTestURL(t)
	adm := newAdmin(t, url)
	exchange, _ := adm.exchange("spectacles-inspect-unsupported")
	in := openBroker(t, Config{Options: opts("svc", "inspector"), URL: url, Exchange: exchange})
	ctx := ctxT(t)
	if _, ok := any(in).(core.PendingInspector); ok {
		t.Error("an open AMQP broker is a core.PendingInspector")
	}
	_, entriesErr := in.Entries(ctx, "EV", core.RangeQuery{Count: 10})
	if !errors.Is(entriesErr, core.ErrUnsupported) {
		t.Errorf("entries of a live event: %v, want ErrUnsupported", entriesErr)
	}
}

// deadLetters makes n dead letters of ev in the dead-letter queue of
// exchange and subgroup, in order, through a consumer that rejects them
// while accept is false (and otherwise acknowledges them and sends them
// to the returned channel). It returns their payloads and original ids.
func deadLetters(t *testing.T, url, exchange, subgroup, ev string, n int) (accept *atomic.Bool, got chan *core.Message, payloads []string, ids []string) {
	t.Helper()
	adm := newAdmin(t, url)
	cons := openBroker(t, Config{Options: inspectOpts("svc", "rejecter"), URL: url, Exchange: exchange, Subgroup: subgroup})
	accept = new(atomic.Bool)
	got = make(chan *core.Message, 16)
	startConsume(t, cons, []string{ev}, func(ctx context.Context, m *core.Message) {
		if !accept.Load() {
			if err := m.Reject(ctx, "bad "+string(m.Raw)); err != nil {
				t.Errorf("reject: %v", err)
			}
			return
		}
		if err := m.Ack(ctx); err != nil {
			t.Errorf("ack: %v", err)
		}
		got <- m
	})
	for i := range n {
		p := fmt.Sprintf(`{"n":%d}`, i)
		id, err := cons.Publish(ctxT(t), ev, core.Raw(p))
		if err != nil {
			t.Fatal(err)
		}
		payloads, ids = append(payloads, p), append(ids, id)
	}
	waitReady(t, adm, QueueName(exchange, subgroup, core.DeadLetterEvent(ev)), n)
	return accept, got, payloads, ids
}

// waitReady waits until queue holds n ready messages (a passive declare:
// no statistics lag).
func waitReady(t *testing.T, adm *admin, queue string, n int) {
	t.Helper()
	eventually(t, 10*time.Second, func() (bool, string) {
		q, err := adm.channel().QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return false, err.Error()
		}
		return q.Messages == n, fmt.Sprintf("%s holds %d ready messages, want %d", queue, q.Messages, n)
	})
}

func entryIDs(es []core.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func TestInspectEntriesPeeksDeadLetters(t *testing.T) {
	t.Parallel()
	url := mgmtTestURL(t)
	const ev = "EV"
	adm, exchange, _ := testExchange(t, url, "spectacles-inspect-entries", "", ev)
	_, _, payloads, origIDs := deadLetters(t, url, exchange, "", ev, 3)
	in := openBroker(t, Config{Options: opts("svc", "inspector"), URL: url, Exchange: exchange})
	ctx := ctxT(t)
	dl := core.DeadLetterEvent(ev)

	es, err := in.Entries(ctx, dl, core.RangeQuery{Count: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 {
		t.Fatalf("entries = %+v, want 3", es)
	}
	for i, e := range es {
		if e.ID == "" || e.ID == origIDs[i] {
			t.Errorf("entry %d id %q: want the dead letter's own id", i, e.ID)
		}
		if string(e.Raw) != payloads[i] {
			t.Errorf("entry %d raw %q, want %q", i, e.Raw, payloads[i])
		}
		h := e.Headers
		if h[core.HeaderEvent] != ev || h[core.HeaderID] != origIDs[i] || h[core.HeaderReason] != "bad "+payloads[i] ||
			h[core.HeaderClient] != "rejecter" || h[core.HeaderDeliveries] != "1" {
			t.Errorf("entry %d headers %v", i, h)
		}
		if _, ok := h[deliveriesHeader]; ok {
			t.Errorf("entry %d shows the driver's %s header", i, deliveriesHeader)
		}
	}
	ids := entryIDs(es)
	// Peeking leaves them in place, in order.
	waitReady(t, adm, QueueName(exchange, "", dl), 3)
	again, err := in.Entries(ctx, dl, core.RangeQuery{Count: 10})
	if err != nil || fmt.Sprint(entryIDs(again)) != fmt.Sprint(ids) {
		t.Errorf("second listing %v, %v; want %v", entryIDs(again), err, ids)
	}

	for _, tc := range []struct {
		q    core.RangeQuery
		want []string
	}{
		{core.RangeQuery{Count: 2}, ids[:2]},
		{core.RangeQuery{After: ids[0], Count: 1}, ids[1:2]},
		{core.RangeQuery{After: ids[0], Count: 5}, ids[1:]},
		{core.RangeQuery{After: ids[2], Count: 5}, []string{}},
		{core.RangeQuery{Reverse: true, Count: 2}, []string{ids[2], ids[1]}},
		{core.RangeQuery{Reverse: true, Before: ids[1], Count: 5}, ids[:1]},
	} {
		got, err := in.Entries(ctx, dl, tc.q)
		if err != nil || fmt.Sprint(entryIDs(got)) != fmt.Sprint(tc.want) {
			t.Errorf("entries %+v = %v, %v; want %v", tc.q, entryIDs(got), err, tc.want)
		}
	}
	if got, err := in.Entries(ctx, core.DeadLetterEvent("NOSUCH"), core.RangeQuery{}); err != nil || len(got) != 0 {
		t.Errorf("entries of a missing dead-letter queue = %v, %v", got, err)
	}
	waitReady(t, adm, QueueName(exchange, "", dl), 3)
}

func TestInspectRequeue(t *testing.T) {
	t.Parallel()
	url := mgmtTestURL(t)
	const ev, sub = "EV", "s"
	adm, exchange, _ := testExchange(t, url, "spectacles-inspect-requeue", sub, ev)
	accept, got, payloads, _ := deadLetters(t, url, exchange, sub, ev, 3)
	// Requeue needs AMQP alone: the requeueing broker has no management
	// API; a second one lists the dead letters.
	in := openBroker(t, Config{Options: opts("svc", "requeuer"), URL: url, Exchange: exchange, Subgroup: sub, ManagementURL: ManagementOff})
	lister := openBroker(t, Config{Options: opts("svc", "lister"), URL: url, Exchange: exchange, Subgroup: sub})
	ctx := ctxT(t)
	dl := core.DeadLetterEvent(ev)
	es, err := lister.Entries(ctx, dl, core.RangeQuery{Count: 10})
	if err != nil || len(es) != 3 {
		t.Fatalf("entries = %v, %v", entryIDs(es), err)
	}
	ids := entryIDs(es)

	accept.Store(true)
	newIDs, err := in.Requeue(ctx, ev, ids[1], ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if len(newIDs) != 1 || newIDs[0] == "" || newIDs[0] == ids[1] {
		t.Fatalf("requeue returned %v, want one new id", newIDs)
	}
	m := next(t, got)
	if m.ID != newIDs[0] || string(m.Raw) != payloads[1] || m.Deliveries != 1 {
		t.Errorf("received %s %q (deliveries %d), want %s %q (deliveries 1)", m.ID, m.Raw, m.Deliveries, newIDs[0], payloads[1])
	}
	if _, ok := m.Headers[core.HeaderReason]; ok {
		t.Errorf("the requeued message keeps the dead-letter headers: %v", m.Headers)
	}
	none(t, got, 200*time.Millisecond)
	// The others stay, in order.
	waitReady(t, adm, QueueName(exchange, sub, dl), 2)
	left, err := lister.Entries(ctx, dl, core.RangeQuery{Count: 10})
	if err != nil || fmt.Sprint(entryIDs(left)) != fmt.Sprint([]string{ids[0], ids[2]}) {
		t.Errorf("left %v, %v; want %v", entryIDs(left), err, []string{ids[0], ids[2]})
	}

	if out, err := in.Requeue(ctx, "NOSUCH", ids[0]); err == nil || len(out) != 0 || !strings.Contains(err.Error(), "no dead-letter queue") {
		t.Errorf("requeue from a missing queue = %v, %v", out, err)
	}
	// An id that is not there: an error, nothing moves.
	if out, err := in.Requeue(ctx, ev, "nosuch-id"); err == nil || len(out) != 0 {
		t.Errorf("requeue of a missing id = %v, %v; want an error", out, err)
	}
	waitReady(t, adm, QueueName(exchange, sub, dl), 2)
	left, err = lister.Entries(ctx, dl, core.RangeQuery{Count: 10})
	if err != nil || fmt.Sprint(entryIDs(left)) != fmt.Sprint([]string{ids[0], ids[2]}) {
		t.Errorf("after a failed requeue: left %v, %v; want %v", entryIDs(left), err, []string{ids[0], ids[2]})
	}
	// Both at once, in the order asked.
	newIDs, err = in.Requeue(ctx, ev, ids[2], ids[0])
	if err != nil || len(newIDs) != 2 {
		t.Fatalf("requeue = %v, %v", newIDs, err)
	}
	received := map[string]bool{next(t, got).ID: true, next(t, got).ID: true}
	if !received[newIDs[0]] || !received[newIDs[1]] {
		t.Errorf("received %v, want %v", received, newIDs)
	}
	waitReady(t, adm, QueueName(exchange, sub, dl), 0)
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestInspectWithoutManagement(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	const ev = "EV"
	_, exchange, _ := testExchange(t, url, "spectacles-inspect-nomgmt", "", ev)
	const secret = "Zz9s3cretPW"
	down := "http://guest:" + secret + "@" + closedPort(t)
	b := openBroker(t, Config{Options: inspectOpts("svc", "c"), URL: url, Exchange: exchange, Prefetch: 1, ManagementURL: down})
	startConsume(t, b, []string{ev}, blockUntilEnd(t))
	for i := range 3 {
		if _, err := b.Publish(ctxT(t), ev, i); err != nil {
			t.Fatal(err)
		}
	}
	ctx := ctxT(t)
	q := QueueName(exchange, "", ev)
	noSecret := func(what string, err error) {
		t.Helper()
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the password: %v", what, err)
		}
	}

	// AMQP alone: the declared events, ready messages of the own queue.
	eventually(t, 10*time.Second, func() (bool, string) {
		list, err := b.Streams(ctx)
		noSecret("streams", err)
		if err != nil {
			return false, err.Error()
		}
		want := fmt.Sprint([]core.StreamInfo{{Name: ev, Length: 2, Groups: 1}, {Name: core.DeadLetterEvent(ev), Groups: 1}})
		return fmt.Sprint(list) == want, fmt.Sprintf("streams %+v, want %s", list, want)
	})
	// The figures are partial, and the broker says so and why.
	serr := b.StatsErr()
	noSecret("stats", serr)
	if !errors.Is(serr, core.ErrStatsUnavailable) || !strings.Contains(serr.Error(), "statistics unavailable: management API at http://"+strings.TrimPrefix(down, "http://guest:"+secret+"@")+" does not answer") {
		t.Errorf("stats without the API: %v, want ErrStatsUnavailable naming the URL", serr)
	}
	gs, err := b.Groups(ctx, ev)
	noSecret("groups", err)
	if err != nil || len(gs) != 1 || gs[0] != (core.GroupInfo{Name: q, Consumers: 1, Pending: -1, Lag: 2}) {
		t.Errorf("groups = %+v, %v", gs, err)
	}
	if gs, err := b.Groups(ctx, "NOSUCH"); err != nil || len(gs) != 0 {
		t.Errorf("groups of a missing queue = %+v, %v", gs, err)
	}
	_, err = b.Consumers(ctx, ev, q)
	noSecret("consumers", err)
	if !errors.Is(err, core.ErrUnsupported) {
		t.Errorf("consumers: %v, want ErrUnsupported", err)
	}
	_, err = b.Entries(ctx, core.DeadLetterEvent(ev), core.RangeQuery{})
	noSecret("entries", err)
	if !errors.Is(err, core.ErrUnsupported) {
		t.Errorf("entries: %v, want ErrUnsupported", err)
	}
	if info, err := b.Server(ctx); err != nil || info.Version == "" {
		t.Errorf("server = %+v, %v", info, err)
	}

	// Off.
	off := openBroker(t, Config{Options: opts("svc", "off"), URL: url, Exchange: exchange, ManagementURL: "off"})
	if list, err := off.Streams(ctx); err != nil || len(list) != 0 {
		t.Errorf("streams, API off, nothing consumed = %+v, %v", list, err)
	}
	if _, err := off.Consumers(ctx, ev, q); !errors.Is(err, core.ErrUnsupported) || !strings.Contains(err.Error(), "off") {
		t.Errorf("consumers, API off: %v", err)
	}
	if err := off.StatsErr(); !errors.Is(err, core.ErrStatsUnavailable) || !strings.Contains(err.Error(), "off") {
		t.Errorf("stats, API off: %v", err)
	}
}

// TestInspectRefusedLogin: a management API that refuses the login
// degrades as a missing one does, and the error names the 401 without the
// password.
func TestInspectRefusedLogin(t *testing.T) {
	t.Parallel()
	url := mgmtTestURL(t)
	adm := newAdmin(t, url)
	exchange, _ := adm.exchange("spectacles-inspect-refused")
	const ev = "EV"
	const secret = "Zz9s3cretPW"
	noSecret := func(what string, err error) {
		t.Helper()
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the password: %v", what, err)
		}
	}
	base, err := amqptest.ManagementURL(url)
	if err != nil {
		t.Fatal(err)
	}
	refused := openBroker(t, Config{Options: opts("svc", "refused"), URL: url, Exchange: exchange,
		ManagementURL: strings.Replace(base, "://", "://guest:"+secret+"@", 1)})
	ctx := ctxT(t)
	list, err := refused.Streams(ctx)
	noSecret("streams (refused login)", err)
	if err != nil || len(list) != 0 {
		t.Errorf("streams with a refused login = %+v, %v; want none (it consumed nothing)", list, err)
	}
	_, err = refused.Consumers(ctx, ev, QueueName(exchange, "", ev))
	noSecret("consumers (refused login)", err)
	if !errors.Is(err, core.ErrUnsupported) || !strings.Contains(err.Error(), "401") {
		t.Errorf("consumers with a refused login: %v, want ErrUnsupported naming the 401", err)
	}
}

func TestManagementURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ amqp, mgmt, want string }{
		{"amqp://guest:guest@127.0.0.1:5672/", "", "http://127.0.0.1:15672"},
		{"amqp://u:p@rabbit.internal/vh", "", "http://rabbit.internal:15672"},
		{"amqps://u:p@rabbit.internal:5671/", "", "https://rabbit.internal:15671"},
		{"amqp://[::1]:5672/", "", "http://[::1]:15672"},
		{"amqp://u:p@h/", "OFF", ManagementOff},
		{"amqp://u:p@h/", " http://admin:x@mgmt:8080/rabbit/ ", "http://admin:x@mgmt:8080/rabbit/"},
	} {
		cfg, err := Config{URL: tc.amqp, Exchange: "x", ManagementURL: tc.mgmt}.withDefaults()
		if err != nil || cfg.ManagementURL != tc.want {
			t.Errorf("%q, %q: ManagementURL %q, %v; want %q", tc.amqp, tc.mgmt, cfg.ManagementURL, err, tc.want)
		}
	}
	for _, bad := range []string{"ftp://h:1", "http://u:s3cr3tXY@[::1", "127.0.0.1:15672", "http://u:s3cr3tXY@/x"} {
		_, err := Config{URL: DefaultURL, Exchange: "x", ManagementURL: bad}.withDefaults()
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ManagementURL %q: %v, want ErrInvalidConfig", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3tXY") {
			t.Errorf("ManagementURL %q: the error shows the password: %v", bad, err)
		}
	}

	// Credentials and vhost: the AMQP URL's unless the management URL has
	// its own user info; never in the request URL.
	for _, tc := range []struct{ amqp, mgmt, user, pass, vhost, base string }{
		{"amqp://u:p%40ss@h:5672/", "", "u", "p@ss", "/", "http://h:15672"},
		{"amqp://u:p@h:5672/v%2Fx", "", "u", "p", "v/x", "http://h:15672"},
		{"amqp://h", "", "guest", "guest", "/", "http://h:15672"},
		{"amqp://u:p@h/v", "https://admin:pw@m:443/rmq/", "admin", "pw", "v", "https://m:443/rmq"},
	} {
		cfg, err := Config{URL: tc.amqp, Exchange: "x", ManagementURL: tc.mgmt}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		m, err := newMgmt(&cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if m.user != tc.user || m.pass != tc.pass || m.vhost != tc.vhost || m.base != tc.base {
			t.Errorf("%q, %q: user %q pass %q vhost %q base %q", tc.amqp, tc.mgmt, m.user, m.pass, m.vhost, m.base)
		}
		m.close()
	}
}

// TestPageOf pages a queue's head by id, as Entries does.
func TestPageOf(t *testing.T) {
	t.Parallel()
	msgs := make([]mgmtMessage, 5)
	for i := range msgs {
		msgs[i].Properties.MessageID = fmt.Sprintf("id%d", i+1) // id1 … id5
	}
	ids := func(ms []mgmtMessage) string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Properties.MessageID)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		q              core.RangeQuery
		count          int
		complete, last bool
		want           string
		ok             bool
	}{
		{core.RangeQuery{}, 2, false, false, "id1,id2", true},
		{core.RangeQuery{After: "id2"}, 2, false, false, "id3,id4", true},
		{core.RangeQuery{After: "id4"}, 2, false, false, "", false},      // needs a longer head
		{core.RangeQuery{After: "id4"}, 2, true, true, "id5", true},      // the whole queue
		{core.RangeQuery{After: "id9"}, 2, false, false, "", false},      // not seen yet
		{core.RangeQuery{After: "id0x"}, 2, true, true, "id1,id2", true}, // gone: by text
		{core.RangeQuery{Reverse: true}, 2, false, false, "", false},
		{core.RangeQuery{Reverse: true}, 2, true, true, "id5,id4", true},
		{core.RangeQuery{Reverse: true, Before: "id3"}, 5, true, true, "id2,id1", true},
		{core.RangeQuery{Reverse: true, Before: "id3x"}, 5, true, true, "id3,id2,id1", true},
	} {
		got, ok := pageOf(msgs, tc.q, tc.count, tc.complete, tc.last)
		if !ok {
			got = nil // not a page: the caller reads a longer head
		}
		if ids(got) != tc.want || ok != tc.ok {
			t.Errorf("pageOf(%+v, %d, %v, %v) = %s, %v; want %s, %v", tc.q, tc.count, tc.complete, tc.last, ids(got), ok, tc.want, tc.ok)
		}
	}
	// Headers as text, without the driver's delivery count.
	var m mgmtMessage
	m.PayloadEncoding, m.Payload = "base64", "aGk="
	m.Properties.Headers = map[string]json.RawMessage{"reason": json.RawMessage(`"bad"`), "n": json.RawMessage(`3`), deliveriesHeader: json.RawMessage(`2`)}
	e := entryOfMessage(&m)
	if string(e.Raw) != "hi" || len(e.Headers) != 2 || e.Headers["reason"] != "bad" || e.Headers["n"] != "3" {
		t.Errorf("entry = %+v", e)
	}
}

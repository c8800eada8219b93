package amqp

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// The peer in these tests is a plain amqp091 client doing what
// @spectacles/brokers does on the wire: it declares the group's exchange
// with amqplib's defaults (direct, durable) and each queue with
// assertQueue(name) (durable, no arguments), publishes without delivery
// mode or message id, calls with an exclusive server-named callback queue,
// reply_to and correlation_id, and replies through the default exchange.

// peerDeclareExchange declares exchange as @spectacles/brokers does.
func peerDeclareExchange(ch *amqp091.Channel, exchange string) error {
	return ch.ExchangeDeclare(exchange, "direct", true, false, false, false, nil)
}

// peerDeclareQueue declares and binds a queue as @spectacles/brokers does.
func peerDeclareQueue(ch *amqp091.Channel, exchange, queue, event string) error {
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return err
	}
	return ch.QueueBind(queue, event, exchange, false, nil)
}

// peerChannel opens a channel of the peer's and declares exchange on it.
func peerChannel(t testing.TB, adm *admin, exchange string) *amqp091.Channel {
	t.Helper()
	peer := adm.newChannel()
	if err := peerDeclareExchange(peer, exchange); err != nil {
		t.Fatal(err)
	}
	return peer
}

// peerQueue is the set-up of the tests where the peer consumes: on a new
// exchange, the peer declares the queue of event in subgroup (deleted
// when the test ends) and consumes it, acknowledging automatically when
// autoAck is set.
func peerQueue(t testing.TB, subgroup, event string, autoAck bool) (adm *admin, exchange string, peer *amqp091.Channel, dels <-chan amqp091.Delivery) {
	t.Helper()
	adm, exchange, track := testExchange(t, serverURL(t), "spectacles-wire", "")
	queue := QueueName(exchange, subgroup, event)
	track(queue)
	peer = peerChannel(t, adm, exchange)
	if err := peerDeclareQueue(peer, exchange, queue, event); err != nil {
		t.Fatal(err)
	}
	dels, err := peer.Consume(queue, "", autoAck, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return adm, exchange, peer, dels
}

func mustMsgpack(t testing.TB, v any) []byte {
	t.Helper()
	return brokertest.Msgpack(t, v)
}

func TestWirePeerPublishesToUs(t *testing.T) {
	t.Parallel()
	const ev = "MESSAGE_CREATE"
	adm, exchange, _ := testExchange(t, serverURL(t), "spectacles-wire", "", ev)

	b := openBroker(t, Config{Options: opts("worker", "w1"), Exchange: exchange})
	h, got := collect(t, true)
	startConsume(t, b, []string{ev}, h)

	peer := peerChannel(t, adm, exchange)
	// A JS object, as @spectacles/brokers encodes it.
	obj := map[string]any{"id": "81384788765712384", "content": "spectacles is awesome"}
	if err := peer.PublishWithContext(ctxT(t), exchange, ev, false, false, amqp091.Publishing{Body: mustMsgpack(t, obj)}); err != nil {
		t.Fatal(err)
	}
	m := next(t, got)
	if m.Event != ev || m.ID == "" || m.Deliveries != 1 {
		t.Errorf("event %q id %q deliveries %d", m.Event, m.ID, m.Deliveries)
	}
	if data, err := m.Data(); err != nil || !reflect.DeepEqual(data, obj) {
		t.Errorf("data %v (err %v), want %v", data, err, obj)
	}
	// A dispatch as spec-tacles/gateway sends it: a msgpack str of JSON,
	// with an expiration.
	str := mustMsgpack(t, `{"guild_id":"1","n":2}`)
	if err := peer.PublishWithContext(ctxT(t), exchange, ev, false, false, amqp091.Publishing{Body: str, Expiration: "120000"}); err != nil {
		t.Fatal(err)
	}
	m = next(t, got)
	if data, err := m.Data(); err != nil || !reflect.DeepEqual(data, map[string]any{"guild_id": "1", "n": int64(2)}) {
		t.Errorf("gateway-style data %#v (err %v)", data, err)
	}
}

func TestWireWePublishToPeer(t *testing.T) {
	t.Parallel()
	ev := "GUILD_CREATE"
	_, exchange, _, dels := peerQueue(t, "", ev, true)
	b := openBroker(t, Config{Options: opts("gateway", "g1"), Exchange: exchange})
	data := map[string]any{"id": "1", "name": "Spectacles"}
	id, err := b.Publish(ctxT(t), ev, data)
	if err != nil {
		t.Fatal(err)
	}
	d := rawNext(t, dels)
	if d.Exchange != exchange || d.RoutingKey != ev {
		t.Errorf("exchange %q key %q", d.Exchange, d.RoutingKey)
	}
	if d.MessageId != id || d.DeliveryMode != amqp091.Persistent || d.ContentType != "application/msgpack" || d.Expiration != "" {
		t.Errorf("message_id %q (want %q) delivery_mode %d content_type %q expiration %q", d.MessageId, id, d.DeliveryMode, d.ContentType, d.Expiration)
	}
	var back map[string]any
	if err := msgpack.Unmarshal(d.Body, &back); err != nil || !reflect.DeepEqual(back, data) {
		t.Errorf("body %v (err %v), want %v", back, err, data)
	}
}

func TestWireExpire(t *testing.T) {
	t.Parallel()
	ev := "READY"
	_, exchange, _, dels := peerQueue(t, "peer", ev, true)
	o := opts("gateway", "g1")
	o.MessageTimeout = 90 * time.Second
	b := openBroker(t, Config{Options: o, Exchange: exchange, Expire: true})
	if _, err := b.Publish(ctxT(t), ev, 1); err != nil {
		t.Fatal(err)
	}
	if d := rawNext(t, dels); d.Expiration != "90000" {
		t.Errorf("expiration %q, want 90000 (ms)", d.Expiration)
	}
}

func TestWirePeerCallsUs(t *testing.T) {
	t.Parallel()
	const ev = "REQUEST"
	adm, exchange, _ := testExchange(t, serverURL(t), "spectacles-wire", "", ev)

	b := openBroker(t, Config{Options: opts("rest", "r1"), Exchange: exchange})
	startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
		data, _ := m.Data()
		if err := m.Reply(ctx, map[string]any{"echo": data}); err != nil {
			t.Errorf("reply: %v", err)
		}
		_ = m.Ack(ctx)
	})

	peer := peerChannel(t, adm, exchange)
	cb, err := peer.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	replies, err := peer.Consume(cb.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	const corr = "7f1c2c9e-peer-correlation"
	err = peer.PublishWithContext(ctxT(t), exchange, ev, false, false, amqp091.Publishing{
		Body: mustMsgpack(t, map[string]any{"path": "/gateway"}), ReplyTo: cb.Name, CorrelationId: corr,
	})
	if err != nil {
		t.Fatal(err)
	}
	d := rawNext(t, replies)
	if d.Exchange != "" || d.RoutingKey != cb.Name || d.CorrelationId != corr {
		t.Errorf("reply came on exchange %q key %q correlation %q; want the default exchange, %q, %q", d.Exchange, d.RoutingKey, d.CorrelationId, cb.Name, corr)
	}
	var reply map[string]any
	if err := msgpack.Unmarshal(d.Body, &reply); err != nil || !reflect.DeepEqual(reply, map[string]any{"echo": map[string]any{"path": "/gateway"}}) {
		t.Errorf("reply %v (err %v)", reply, err)
	}
}

func TestWireWeCallPeer(t *testing.T) {
	t.Parallel()
	ev := "REQUEST"
	adm, exchange, peer, dels := peerQueue(t, "", ev, false)
	pch := adm.newChannel()
	peerDone := make(chan struct{})
	go func() {
		defer close(peerDone)
		for d := range dels {
			var req any
			_ = msgpack.Unmarshal(d.Body, &req)
			body, _ := msgpack.Marshal(map[string]any{"status": 200, "req": req})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := pch.PublishWithContext(ctx, "", d.ReplyTo, false, false, amqp091.Publishing{Body: body, CorrelationId: d.CorrelationId})
			cancel()
			if err != nil {
				t.Errorf("peer reply: %v", err)
			}
			_ = d.Ack(false)
		}
	}()
	t.Cleanup(func() { _ = peer.Close(); <-peerDone })

	b := openBroker(t, Config{Options: opts("worker", "w1"), Exchange: exchange})
	for i := range 20 {
		p, err := b.Call(ctxT(t), ev, map[string]any{"i": int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		data, err := p.Data()
		want := map[string]any{"status": int64(200), "req": map[string]any{"i": int64(i)}}
		if err != nil || !reflect.DeepEqual(data, want) {
			t.Fatalf("reply %v (err %v), want %v", data, err, want)
		}
	}
}

// TestWireDeclarationsCompatible: peers declare the same exchange and
// queues with plain arguments, before or after us, and RabbitMQ accepts
// both (it refuses a declaration whose arguments differ). The queues are
// declared after this client dead-lettered and handed back messages, so
// that neither changed them.
func TestWireDeclarationsCompatible(t *testing.T) {
	t.Parallel()
	adm := newAdmin(t, serverURL(t))

	t.Run("PeerAfterUs", func(t *testing.T) {
		exchange, track := adm.exchange("spectacles-wire")
		ev := "MESSAGE_CREATE"
		queues := spectaclesQueues(exchange, "sub", ev)
		track(queues...)
		o := opts("worker", "w1")
		o.MaxDeliveries = 2
		b := openBroker(t, Config{Options: o, Exchange: exchange, Subgroup: "sub"})
		dead := make(chan struct{})
		var once sync.Once
		startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
			if m.Deliveries >= 2 {
				once.Do(func() { close(dead) })
			}
			// Never settled: handed back after MessageTimeout, then
			// dead-lettered.
		})
		if _, err := b.Publish(ctxT(t), ev, "poison"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-dead:
		case <-time.After(15 * time.Second):
			t.Fatal("no second delivery")
		}
		waitQueueLen(t, adm, QueueName(exchange, "sub", core.DeadLetterEvent(ev)), 1)

		peer := adm.newChannel()
		if err := peerDeclareExchange(peer, exchange); err != nil {
			t.Fatalf("peer exchange declaration refused: %v", err)
		}
		if err := peerDeclareQueue(peer, exchange, queues[0], ev); err != nil {
			t.Fatalf("peer queue declaration refused: %v", err)
		}
		if err := peerDeclareQueue(peer, exchange, queues[1], core.DeadLetterEvent(ev)); err != nil {
			t.Fatalf("peer dead-letter queue declaration refused: %v", err)
		}
	})

	t.Run("UsAfterPeer", func(t *testing.T) {
		exchange, track := adm.exchange("spectacles-wire")
		ev := "MESSAGE_CREATE"
		queues := spectaclesQueues(exchange, "", ev)
		track(queues...)
		peer := peerChannel(t, adm, exchange)
		if err := peerDeclareQueue(peer, exchange, queues[0], ev); err != nil {
			t.Fatal(err)
		}
		b := openBroker(t, Config{Options: opts("worker", "w1"), Exchange: exchange})
		h, got := collect(t, true)
		startConsume(t, b, []string{ev}, h)
		id, err := b.Publish(ctxT(t), ev, 1)
		if err != nil {
			t.Fatal(err)
		}
		if m := next(t, got); m.ID != id {
			t.Errorf("got %s, want %s", m.ID, id)
		}
	})

	// The control: a queue declared with an argument we do not use makes
	// Consume fail with RabbitMQ's refusal, and nothing leaks.
	t.Run("DifferentArgumentsRefused", func(t *testing.T) {
		exchange, track := adm.exchange("spectacles-wire")
		ev := "MESSAGE_CREATE"
		queues := spectaclesQueues(exchange, "", ev)
		track(queues...)
		ch := peerChannel(t, adm, exchange)
		if _, err := ch.QueueDeclare(queues[0], true, false, false, false, amqp091.Table{"x-max-length": int32(10)}); err != nil {
			t.Fatal(err)
		}
		b := openBroker(t, Config{Options: opts("worker", "w1"), Exchange: exchange})
		err := b.Consume(context.Background(), []string{ev}, func(context.Context, *core.Message) {})
		var ae *amqp091.Error
		if !errors.As(err, &ae) || ae.Code != amqp091.PreconditionFailed || !strings.Contains(err.Error(), queues[0]) {
			t.Errorf("consume: err = %v, want PRECONDITION_FAILED naming %s", err, queues[0])
		}
		// The broker still works.
		if _, err := b.Publish(ctxT(t), ev, 1); err != nil {
			t.Errorf("publish after a refused consume: %v", err)
		}
	})
}

// waitQueueLen waits until queue holds n ready messages.
func waitQueueLen(t testing.TB, adm *admin, queue string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		q, err := adm.channel().QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			t.Fatalf("inspect %s: %v", queue, err)
		}
		if q.Messages == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s holds %d messages, want %d", queue, q.Messages, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

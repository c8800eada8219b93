package tui

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	amqptransport "github.com/spectacles-go/spectacles/transport/amqp"
	"github.com/spectacles-go/spectacles/transport/amqp/amqptest"
)

// rabbitURL returns the RabbitMQ of the AMQP end-to-end test
// ($SPECTACLES_AMQP_URL, else the local default) once its management API
// answers. Without either the test fails under CI=true and is skipped
// elsewhere (amqptest probes them once, quickly).
func rabbitURL(t *testing.T) string {
	t.Helper()
	return amqptest.WithManagement(t)
}

func redactAMQP(url string) string {
	if u, err := amqp091.ParseURI(url); err == nil && u.Password != "" {
		return strings.Replace(url, ":"+u.Password+"@", ":xxxxx@", 1)
	}
	return url
}

// waitMatch waits until the program's output matches every pattern.
func waitMatch(t *testing.T, tm *teatest.TestModel, patterns ...string) {
	t.Helper()
	res := make([]*regexp.Regexp, len(patterns))
	for i, p := range patterns {
		res[i] = regexp.MustCompile(p)
	}
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		for _, re := range res {
			if !re.Match(b) {
				return false
			}
		}
		return true
	}, teatest.WithDuration(40*time.Second), teatest.WithCheckInterval(50*time.Millisecond))
}

// testExchange names an exchange of the test's own, and deletes it when
// the test ends with the queues of events (and their dead letters) for
// each of subgroups; cleanups run last in, first out, so the brokers
// opened afterwards close first. It deletes nothing else.
func testExchange(t *testing.T, url, prefix string, subgroups []string, events ...string) string {
	t.Helper()
	var b [5]byte
	_, _ = rand.Read(b[:])
	exchange := prefix + hex.EncodeToString(b[:])
	admin, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ch, err := admin.Channel()
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer ch.Close()
		for _, sub := range subgroups {
			for _, ev := range events {
				for _, e := range []string{ev, core.DeadLetterEvent(ev)} {
					if _, err := ch.QueueDelete(amqptransport.QueueName(exchange, sub, e), false, false, false); err != nil {
						t.Logf("cleanup: %v", err)
					}
				}
			}
		}
		if err := ch.ExchangeDelete(exchange, false, false); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	return exchange
}

// openAMQP opens a broker of cfg, closed when the test ends.
func openAMQP(t *testing.T, cfg amqptransport.Config) *amqptransport.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	br, err := amqptransport.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = br.Close() })
	return br
}

// TestEndToEndAMQP drives the console on a real RabbitMQ with its
// management API: a consumer holds unacknowledged messages, a message is
// dead-lettered; Streams and Groups show depth, unacked and consumers,
// Pending explains why it lists nothing, and the dead letter is shown,
// opened and requeued from the console, and a consumer receives it.
func TestEndToEndAMQP(t *testing.T) {
	url := rabbitURL(t)
	const ev = "MESSAGE_CREATE"
	exchange := testExchange(t, url, "spectacles-tui-e2e-", []string{"", "r"}, ev)
	open := func(client, subgroup string, prefetch int) *amqptransport.Broker {
		return openAMQP(t, amqptransport.Config{URL: url, Exchange: exchange, Subgroup: subgroup, Prefetch: prefetch,
			Options: core.Options{Identity: core.Identity{Group: exchange, Client: client}, MessageTimeout: time.Hour, MaxDeliveries: 5, Logger: quiet()}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The worker: rejects "poison" (a dead letter), holds the others.
	worker := open("worker", "", 3)
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	if err := worker.Consume(ctx, []string{ev}, func(ctx context.Context, m *core.Message) {
		if strings.Contains(string(m.Raw), "poison") {
			_ = m.Reject(ctx, "e2e: poison")
			return
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		_ = m.Ack(ctx)
	}); err != nil {
		t.Fatal(err)
	}
	// The receiver, in subgroup r, gets a copy of everything.
	receiver := open("receiver", "r", 0)
	poisons := make(chan string, 10)
	if err := receiver.Consume(ctx, []string{ev}, func(ctx context.Context, m *core.Message) {
		if strings.Contains(string(m.Raw), "poison") {
			poisons <- m.ID
		}
		_ = m.Ack(ctx)
	}); err != nil {
		t.Fatal(err)
	}
	console := open("console", "", 0)
	firstPoison, err := console.Publish(ctx, ev, map[string]any{"content": "poison"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-poisons:
		if id != firstPoison {
			t.Fatalf("receiver got %s, want %s", id, firstPoison)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the receiver did not get the first message")
	}
	for range 5 {
		if _, err := console.Publish(ctx, ev, map[string]any{"content": "hold"}); err != nil {
			t.Fatal(err)
		}
	}

	node := &Node{
		Info:    NodeInfo{Name: "e2e", Client: "console", Group: exchange, BrokerKind: "amqp", BrokerAddress: redactAMQP(url), StaleAfter: time.Hour},
		Inspect: console, Publisher: console,
	}
	if u, err := amqp091.ParseURI(url); err == nil && u.Password != "" {
		node.Secrets = []string{u.Password}
	}
	opts := plainOptions()
	opts.Refresh = 300 * time.Millisecond
	opts.Context = ctx
	opts.Now = time.Now
	tm := teatest.NewTestModel(t, New(node, opts), teatest.WithInitialTermSize(140, 36))
	waitMatch(t, tm, `Broker\s+amqp amqp://`, `● up`, `round trip`)

	// Streams: depth 5 (3 unacked, 2 ready) in 2 queues; the dead letter,
	// copied to both queues bound for MESSAGE_CREATE:dlq.
	typeKeys(tm, "2")
	waitMatch(t, tm, `EVENT\s+MESSAGES\s+QUEUES\s+READY\s+UNACKED\s+CONSUMERS`,
		`MESSAGE_CREATE\s+5\s+2\s+2\s+3\s+2`, `MESSAGE_CREATE:dlq\s+2\s+2\s+2\s+0\s+0`)

	// Groups: the worker's queue holds 3 unacked, 2 ready, one consumer.
	queue := regexp.QuoteMeta(amqptransport.QueueName(exchange, "", ev))
	tm.Send(keyMsg(":"))
	tm.Type("groups " + ev)
	typeKeys(tm, "enter")
	waitMatch(t, tm, `QUEUE\s+CONSUMERS\s+UNACKED ↓\s+READY`, queue+`\s+1\s+3\s+2\s+5`, `worker\.\S* @ spectacles `+regexp.QuoteMeta(exchange)+`/worker`)

	// Pending explains; its actions say why they are unavailable.
	tm.Send(keyMsg(":"))
	tm.Type("pending " + ev + " " + amqptransport.QueueName(exchange, "", ev))
	typeKeys(tm, "enter")
	waitMatch(t, tm, `RabbitMQ does not let another client list or take unacknowledged messages; unacked per queue: 3`)
	typeKeys(tm, "A")
	waitMatch(t, tm, `ack is unavailable: only the channel`)

	// Dead letters: shown, opened, requeued, received.
	tm.Send(keyMsg(":"))
	tm.Type("dlq " + ev)
	typeKeys(tm, "enter")
	// (A dead letter is a new message: its id is new, and its headers name
	// the original.)
	waitMatch(t, tm, `MESSAGE_CREATE:dlq\s+[0-9a-f-]{36}\s+\[e2e: poison\]`)
	typeKeys(tm, "enter")
	waitMatch(t, tm, `MESSAGE_CREATE:dlq  [0-9a-f-]{36}`, `"content": "poison"`, regexp.QuoteMeta(firstPoison))
	typeKeys(tm, "esc", "R")
	waitMatch(t, tm, `Requeue 1 dead letter`)
	typeKeys(tm, "y")
	waitMatch(t, tm, `requeued 1 of 1 to MESSAGE_CREATE as `)
	select {
	case id := <-poisons:
		if id == firstPoison {
			t.Fatalf("the requeued message kept its id %s", id)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the receiver did not get the requeued dead letter")
	}

	once.Do(func() { close(release) })
	// Leave the tail and let its last poll timer fire, so that no timer
	// goroutine outlives the test.
	typeKeys(tm, "1")
	time.Sleep(amqpTailEvery + 300*time.Millisecond)
	tm.Send(tea.Quit())
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
	out, _ := io.ReadAll(tm.FinalOutput(t))
	if u, err := amqp091.ParseURI(url); err == nil && u.Password != "" && bytes.Contains(out, []byte(":"+u.Password+"@")) {
		t.Fatal("the password was shown")
	}
}

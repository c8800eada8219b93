package tui

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	amqptransport "github.com/spectacles-go/spectacles/transport/amqp"
	"github.com/spectacles-go/spectacles/transport/amqp/amqptest"
)

// TestAMQPStatisticsUnavailable: a console on a real RabbitMQ whose
// management API does not answer (its URL points at a port where nothing
// listens, so the test disturbs no other) while a worker's queue holds
// messages. The console used to show "0 queues", "Warnings none" and "no
// queues bound on this exchange yet"; it must say the statistics are
// unavailable and why (the URL without its password), show the figures
// blank rather than zero, and give the reason in Streams and Groups.
func TestAMQPStatisticsUnavailable(t *testing.T) {
	url := amqptest.URL(t)
	const ev = "MESSAGE_CREATE"
	exchange := testExchange(t, url, "spectacles-tui-nostats-", []string{""}, ev)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAPI := ln.Addr().String()
	_ = ln.Close()
	const secret = "Mgmt5ecretPW"
	open := func(client, mgmt string) *amqptransport.Broker {
		return openAMQP(t, amqptransport.Config{URL: url, Exchange: exchange, ManagementURL: mgmt,
			Options: core.Options{Identity: core.Identity{Group: exchange, Client: client}, MessageTimeout: time.Hour, Logger: quiet()}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A worker in another process would hold these; its queue exists.
	worker := open("worker", amqptransport.ManagementOff)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the brokers close
	if err := worker.Consume(ctx, []string{ev}, func(ctx context.Context, m *core.Message) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		_ = m.Ack(ctx)
	}); err != nil {
		t.Fatal(err)
	}
	console := open("console", "http://guest:"+secret+"@"+deadAPI)
	for range 3 {
		if _, err := console.Publish(ctx, ev, map[string]any{"content": "held"}); err != nil {
			t.Fatal(err)
		}
	}
	node := &Node{Info: NodeInfo{Name: "nostats", Client: "console", Group: exchange, BrokerKind: "amqp", StaleAfter: time.Hour},
		Inspect: console, Publisher: console, Secrets: []string{secret}}
	opts := plainOptions()
	opts.Context = ctx
	d := newDriver(t, node, opts, 160, 40)
	banner := "statistics unavailable: management API at http://" + deadAPI + " does not answer"
	d.mustContain("● up", banner, "Queues", "– ready · – unacked · – consumers", "Dead letters –")
	d.mustNotContain("0 queues", "Warnings     \n   none", secret)
	if v := d.view(); strings.Count(v, "⚠ "+banner) != 2 {
		t.Fatalf("the overview's warnings do not name the cause:\n%s", v)
	}
	d.keys("2")
	d.mustContain(banner, "none known: "+banner)
	d.mustNotContain("no queues bound on this exchange yet", secret)
	d.command("groups " + ev)
	d.mustContain(banner)
	d.mustNotContain("not supported by this broker", secret)
	d.command("pending " + ev)
	d.mustContain("⚠ statistics unavailable")
}

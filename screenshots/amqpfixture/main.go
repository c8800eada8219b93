// Command amqpfixture sets up a small live system on RabbitMQ for the
// console's AMQP screenshot (screenshots/make.sh): on the exchange named
// by its argument, a worker that holds the messages it gets unacked and
// rejects "poison" ones (dead letters), an analytics subgroup with no
// consumer, and a few messages. It prints "ready" once set up and, on
// SIGINT or SIGTERM, deletes the exchange and the queues it declared.
// "amqpfixture -cleanup EXCHANGE" only deletes them.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	amqptransport "github.com/spectacles-go/spectacles/transport/amqp"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "amqpfixture:", err)
		os.Exit(1)
	}
}

func run() error {
	url := os.Getenv("AMQP_URL")
	if url == "" {
		url = amqptransport.DefaultURL
	}
	events := []string{"MESSAGE_CREATE", "MESSAGE_REACTION_ADD"}
	if len(os.Args) == 3 && os.Args[1] == "-cleanup" {
		cleanup(url, os.Args[2], events)
		return nil
	}
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: amqpfixture [-cleanup] EXCHANGE")
	}
	exchange := os.Args[1]
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer cleanup(url, exchange, events)
	quiet := slog.New(slog.DiscardHandler)
	open := func(client, subgroup string, prefetch int) (*amqptransport.Broker, error) {
		return amqptransport.Open(ctx, amqptransport.Config{URL: url, Exchange: exchange, Subgroup: subgroup, Prefetch: prefetch,
			Options: core.Options{Identity: core.Identity{Group: exchange, Client: client}, MessageTimeout: time.Hour, Logger: quiet}})
	}
	sigCtx := ctx
	var brokers []*amqptransport.Broker
	defer func() {
		for _, b := range brokers {
			_ = b.Close()
		}
	}()
	for _, w := range []string{"worker-1", "worker-2"} {
		b, err := open(w, "", 4)
		if err != nil {
			return err
		}
		brokers = append(brokers, b)
		if err := b.Consume(ctx, events, func(ctx context.Context, m *core.Message) {
			if strings.Contains(string(m.Raw), "poison") {
				_ = m.Reject(ctx, "the bot could not handle this message")
				return
			}
			<-sigCtx.Done() // held, unacked, until the end (the handler's own ctx outlives Close)
		}); err != nil {
			return err
		}
	}
	analytics, err := open("analytics", "analytics", 0)
	if err != nil {
		return err
	}
	brokers = append(brokers, analytics)
	// Declare the analytics queues (a consumer that stops at once).
	actx, acancel := context.WithCancel(ctx)
	if err := analytics.Consume(actx, events, func(context.Context, *core.Message) {}); err != nil {
		acancel()
		return err
	}
	acancel()
	time.Sleep(300 * time.Millisecond)
	pub := brokers[0]
	for i := range 2 {
		if _, err := pub.Publish(ctx, "MESSAGE_CREATE", map[string]any{"content": fmt.Sprintf("poison %d", i), "channel_id": "1"}); err != nil {
			return err
		}
	}
	for i := range 23 {
		ev := events[i%2]
		if _, err := pub.Publish(ctx, ev, map[string]any{"content": fmt.Sprintf("hello %d", i), "channel_id": "1"}); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}

// cleanup deletes the queues and the exchange this fixture declared.
func cleanup(url, exchange string, events []string) {
	conn, err := amqp091.Dial(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "amqpfixture: cleanup:", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	for _, sub := range []string{"", "analytics"} {
		for _, ev := range events {
			for _, e := range []string{ev, core.DeadLetterEvent(ev)} {
				_, _ = ch.QueueDelete(amqptransport.QueueName(exchange, sub, e), false, false, false)
			}
		}
	}
	_ = ch.ExchangeDelete(exchange, false, false)
}

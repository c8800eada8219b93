package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/core"
)

// newMessageLine is what consume prints for one message.
func newMessageLine(m *core.Message) messageJSON {
	v, err := m.Data()
	line := newMessageJSON(m.Event, m.ID, m.Headers, m.Raw, v, err)
	d := m.Deliveries
	line.Deliveries = &d
	return line
}

func (a *app) consumeCommand() *cobra.Command {
	var noAck bool
	concurrency := 1
	cmd := &cobra.Command{
		Use:   "consume --group GROUP EVENT...",
		Short: "Consume events for a group and print one JSON line per message",
		Long: `Consume events as a client of a group (--group or BROKER_GROUP is required)
and print one JSON line per message:

  {"event": ..., "id": ..., "deliveries": N, "data": ...}

Lines come in stream order unless --concurrency is above 1. Each printed
message is acknowledged unless --no-ack is given. A message whose payload
cannot be decoded prints {"event", "id", "deliveries", "error",
"raw_base64"} and is not acknowledged: it is delivered again after
BROKER_MESSAGE_TIMEOUT and dead-lettered to EVENT:dlq after
BROKER_MAX_DELIVERIES deliveries, never lost. SIGINT or SIGTERM stops
reading, lets running handlers finish and exits 0. An event name that is
not valid UTF-8 adds "event_base64" (its exact bytes), and headers that
are not add "headers_base64" (every key and value in base64).`,
		Example: `  spectacles consume --group audit MESSAGE_CREATE GUILD_CREATE
  spectacles consume --group audit --no-ack MESSAGE_CREATE:dlq`,
		Args: argsBetween(1, -1),
		RunE: func(cmd *cobra.Command, events []string) (err error) {
			b, err := a.openGroupMember(cmd.Context(), "consume", concurrency, nil)
			if err != nil {
				return err
			}
			id := a.cfg.Identity()
			defer closeBroker(b, &err)

			ctx, stop := context.WithCancelCause(cmd.Context())
			defer stop(nil)
			out := &lineWriter{w: a.stdout}
			handle := func(hctx context.Context, m *core.Message) {
				line := newMessageLine(m)
				if err := out.write(line); err != nil {
					stop(err) // the message stays unacknowledged
					return
				}
				if line.Error != "" || noAck {
					return
				}
				if err := m.Ack(hctx); err != nil {
					a.log.Warn("acknowledgement failed; the message will be delivered again",
						"event", m.Event, "id", m.ID, "err", err)
				}
			}
			a.log.Info("consuming", "events", events, "group", id.Group, "client", id.Client, "ack", !noAck)
			if err := b.Consume(ctx, events, handle); err != nil {
				return fmt.Errorf("consume: %w", err)
			}
			// Consume runs in the background until ctx ends (or, for a
			// stream broker such as ipc, until its input ends); the
			// deferred Close then waits for running handlers and pending
			// acks.
			var inputEnded <-chan struct{}
			if d, ok := b.(interface{ Done() <-chan struct{} }); ok {
				inputEnded = d.Done()
			}
			select {
			case <-ctx.Done():
			case <-inputEnded:
				a.log.Info("the input ended")
				return nil
			}
			if cause := context.Cause(ctx); cause != nil && cmd.Context().Err() == nil {
				return cause // writing the output failed
			}
			a.log.Info("stopping: waiting for running handlers")
			return nil
		},
	}
	cmd.Flags().IntVar(&concurrency, "concurrency", concurrency, "messages handled at once; above 1, lines may come out of stream order")
	cmd.Flags().BoolVar(&noAck, "no-ack", false, "print messages without acknowledging them (they are delivered again after the message timeout)")
	return cmd
}

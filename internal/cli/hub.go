package cli

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/transport/hub"
)

func (a *app) hubCommand() *cobra.Command {
	var address string
	var maxMessage int
	var origins []string
	cmd := &cobra.Command{
		Use:   "hub",
		Short: "Run a hub: the direct transport (websocket and TCP) that BROKER_TYPE=hub connects to",
		Long: `Run a spectacles hub until SIGINT or SIGTERM: a node that services connect to
directly, without Redis or RabbitMQ, for local deployments (the DRS model).

It listens on --address (HUB_ADDRESS, default ` + hub.DefaultAddress + `) for websocket
clients (ws://ADDRESS, any path) and TCP clients (tcp://ADDRESS: one JSON
command per line) on the same port. A command is one JSON object
{"action", "body", "key"}; a client sends drs.register first, then fires
(an event with no key), calls (with a key; the answer is drs.response,
drs.error or drs.exception with the same key) and handles deliveries.
Every message goes to one instance of each group that handles it; a
delivery not acknowledged in time, or left by an instance that
disconnects, goes to another instance of its group.

Web pages may connect from this machine (localhost) only, unless
--allow-origin names their site: any site a user visits could otherwise
reach the services on the user's machine.

Everything is kept in memory: a restart loses what was queued. Other
spectacles commands use the hub with BROKER_TYPE=hub and HUB_URL.`,
		Example: `  spectacles hub
  HUB_ADDRESS=0.0.0.0:7700 spectacles hub
  BROKER_TYPE=hub BROKER_GROUP=audit spectacles consume MESSAGE_CREATE`,
		Args: argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("address") {
				if v, ok := a.env("HUB_ADDRESS"); ok && v != "" {
					address = v
				}
			}
			if _, _, err := net.SplitHostPort(address); err != nil {
				return usageErrorf("--address (HUB_ADDRESS) %q is not host:port", address)
			}
			if maxMessage < 1024 {
				return usageErrorf("--max-message-size must be at least 1024 bytes, got %d", maxMessage)
			}
			ctx := cmd.Context()
			ln, err := hub.Listen(ctx, address)
			if err != nil {
				return err
			}
			addr := ln.Addr().String()
			fmt.Fprintf(a.stderr, "spectacles: hub listening on %s: websocket clients at ws://%s, TCP clients at tcp://%s\n", addr, addr, addr)
			fmt.Fprintf(a.stderr, "spectacles: other commands use it with BROKER_TYPE=hub HUB_URL=ws://%s\n", addr)
			s := hub.NewServer(hub.ServerConfig{MaxMessageSize: maxMessage, Logger: a.log, AllowOrigins: origins})
			if err := s.Serve(ctx, ln); err != nil {
				return err
			}
			st := s.Stats()
			a.log.Info("hub stopped", "published", st.Published, "unhandled", st.Unhandled, "queued_lost", st.Queued+st.InFlight)
			return nil
		},
	}
	cmd.Flags().StringVar(&address, "address", hub.DefaultAddress, "host:port to listen on (env HUB_ADDRESS)")
	cmd.Flags().IntVar(&maxMessage, "max-message-size", hub.DefaultMaxMessageSize, "largest command accepted, in bytes")
	cmd.Flags().StringSliceVar(&origins, "allow-origin", nil,
		"web origin (https://example.com) whose pages may connect, besides this machine's; * allows every site")
	return cmd
}

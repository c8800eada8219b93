package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/discord"
	"github.com/spectacles-go/spectacles/gateway/redisgw"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

// The headless twins of the console's actions: each prints a table, or with
// --json one JSON document (lists as one JSON line per item for tail).
//
// Names and text from the broker go through internal/termtext: a table
// prints a name with a control character, a bidi control or invalid UTF-8
// in the shell's $'...' form (termtext.Quote), which typed back as an
// argument gives the exact bytes; JSON escapes them, and a string that is
// not valid UTF-8 gets a sibling field KEY_base64 with its exact bytes
// (see base64IfInvalid).

// inspector opens a broker client and returns it as a core.Inspector.
func (a *app) inspector(ctx context.Context) (core.Inspector, func(*error), error) {
	id := a.cfg.Identity()
	if id.Group == "" {
		id.Group = "spectacles-console"
	}
	id.Client = cliClient() // the actor of ack, claim and dlq move
	b, err := a.openBroker(ctx, a.options(id), true)
	if err != nil {
		return nil, nil, err
	}
	in, ok := any(b).(core.Inspector)
	if !ok {
		_ = b.Close()
		return nil, nil, fmt.Errorf("the %s broker cannot be inspected: %w", a.cfg.BrokerType, core.ErrUnsupported)
	}
	return in, func(err *error) { closeBroker(b, err) }, nil
}

// withInspector runs fn with the broker opened as a core.Inspector, and
// closes the broker afterwards.
func (a *app) withInspector(fn func(ctx context.Context, in core.Inspector, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) (err error) {
		ctx := cmd.Context()
		in, done, err := a.inspector(ctx)
		if err != nil {
			return err
		}
		defer done(&err)
		return fn(ctx, in, args)
	}
}

// amqpPendingWhy says why RabbitMQ cannot do op, a command on pending
// messages.
func amqpPendingWhy(op string) string {
	switch op {
	case "pending":
		return "AMQP cannot list the unacknowledged messages of other consumers (spectacles groups STREAM counts them per queue)"
	case "ack":
		return "only the channel a message was delivered on can acknowledge it"
	case "claim":
		return "AMQP cannot take a message from the consumer it was delivered to (it goes back to its queue when that consumer's channel closes)"
	default:
		return "AMQP cannot take a message from the consumer it was delivered to; the driver dead-letters a message after MaxDeliveries deliveries, a handler with Reject"
	}
}

// withPending is withInspector for the commands on pending messages (op
// names one): fn gets the broker as a core.PendingInspector, and a broker
// that is none (RabbitMQ) fails with an error wrapping
// core.ErrUnsupported that says why.
func (a *app) withPending(op string, fn func(ctx context.Context, in core.PendingInspector, args []string) error) func(*cobra.Command, []string) error {
	return a.withInspector(func(ctx context.Context, in core.Inspector, args []string) error {
		p, ok := in.(core.PendingInspector)
		if !ok {
			why := "it cannot list or settle the messages delivered to its consumers"
			if a.cfg.BrokerType == "amqp" {
				why = amqpPendingWhy(op)
			}
			return fmt.Errorf("%s: %w (BROKER_TYPE=%s): %s", op, core.ErrUnsupported, a.cfg.BrokerType, why)
		}
		return fn(ctx, p, args)
	})
}

// output prints v as JSON when asJSON, else runs table.
func (a *app) output(asJSON bool, v any, table func(w *tabwriter.Writer)) error {
	if asJSON {
		return (&lineWriter{w: a.stdout}).write(v)
	}
	w := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// warnStats says on standard error, after a listing, that the inspector's
// statistics were unavailable (core.StatsChecker: RabbitMQ's management
// API does not answer), so that a short list is not read as complete.
func (a *app) warnStats(in core.Inspector) {
	if c, ok := in.(core.StatsChecker); ok {
		if err := c.StatsErr(); err != nil {
			fmt.Fprintf(a.stderr, "spectacles: warning: %s: the list holds only what AMQP alone tells (the queues of this client's group)\n", termtext.Escape(err.Error()))
		}
	}
}

func (a *app) streamsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "streams",
		Short: "List every event stream with its length, groups and first/last id",
		Args:  cobra.NoArgs,
		RunE: a.withInspector(func(ctx context.Context, in core.Inspector, _ []string) error {
			list, err := in.Streams(ctx)
			if err != nil {
				return err
			}
			a.warnStats(in)
			views := mapViews(list, newStreamJSON)
			return a.output(asJSON, views, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "STREAM\tLENGTH\tGROUPS\tFIRST\tLAST")
				for _, s := range list {
					fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\n", quote(s.Name), s.Length, s.Groups, quote(s.FirstID), quote(s.LastID))
				}
			})
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// quote quotes a name for a table: as it is when it is safe to print, else in
// the shell's $'...' form (termtext.Quote).
func quote(name string) string { return termtext.Quote(name) }

func (a *app) groupsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "groups STREAM",
		Short: "List the consumer groups of a stream, with their consumers",
		Args:  cobra.ExactArgs(1),
		RunE: a.withInspector(func(ctx context.Context, in core.Inspector, args []string) error {
			groups, err := in.Groups(ctx, args[0])
			if err != nil {
				return err
			}
			views := make([]groupJSON, 0, len(groups))
			for _, g := range groups {
				cs, err := in.Consumers(ctx, args[0], g.Name)
				if err != nil {
					return err
				}
				views = append(views, newGroupJSON(args[0], g, cs))
			}
			return a.output(asJSON, views, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "GROUP\tCONSUMERS\tPENDING\tLAG\tLAST DELIVERED")
				for _, g := range views {
					fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\n", quote(g.Group), g.ConsumerCount, g.PendingCount, g.Lag, quote(g.LastDeliveredID))
					for _, c := range g.Consumers {
						fmt.Fprintf(w, "  %s\t\t%d\t\tidle %s\n", quote(c.Consumer), c.PendingCount, ms(time.Duration(c.IdleMs)))
					}
				}
			})
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) pendingCommand() *cobra.Command {
	var (
		asJSON bool
		q      core.PendingQuery
	)
	cmd := &cobra.Command{
		Use:   "pending STREAM GROUP",
		Short: "List one page of a group's delivered, unacknowledged messages",
		Args:  cobra.ExactArgs(2),
		RunE: a.withPending("pending", func(ctx context.Context, in core.PendingInspector, args []string) error {
			page, err := in.Pending(ctx, args[0], args[1], q)
			if err != nil {
				return err
			}
			views := mapViews(page, func(p core.PendingEntry) pendingJSON { return newPendingJSON(args[0], args[1], p) })
			return a.output(asJSON, views, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tCONSUMER\tIDLE\tDELIVERIES")
				for _, p := range page {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", quote(p.ID), quote(p.Consumer), ms(p.Idle), p.Deliveries)
				}
			})
		}),
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.StringVar(&q.After, "after", "", "start after this id (the last id of the previous page)")
	f.IntVar(&q.Count, "count", 100, "page size")
	f.StringVar(&q.Consumer, "consumer", "", "only this consumer's messages")
	f.DurationVar(&q.MinIdle, "min-idle", 0, "only messages idle at least this long")
	return cmd
}

func (a *app) ackCommand() *cobra.Command {
	var (
		asJSON bool
		bulk   bulkFlags
	)
	cmd := &cobra.Command{
		Use:   "ack STREAM GROUP ID... | --all [--consumer C] [--min-idle D] [--min-deliveries N]",
		Short: "Acknowledge pending messages of a group by hand",
		Args:  bulk.args,
		RunE: a.withPending("ack", func(ctx context.Context, in core.PendingInspector, args []string) error {
			if bulk.all {
				return a.ackAll(ctx, in, args, bulk, asJSON)
			}
			n, err := in.Ack(ctx, args[0], args[1], args[2:]...)
			if err != nil {
				return err
			}
			return a.output(asJSON, ackJSON{target: newTarget(args[0], args[1]), AckedCount: n}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "acknowledged %d of %d\n", n, len(args)-2)
			})
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	bulk.add(cmd.Flags(), true)
	return cmd
}

func (a *app) claimCommand() *cobra.Command {
	var (
		asJSON  bool
		to      string
		minIdle time.Duration
		bulk    bulkFlags
	)
	cmd := &cobra.Command{
		Use:   "claim STREAM GROUP ID... | --all [--consumer C] [--min-idle D] [--min-deliveries N] --to T",
		Short: "Give pending messages of a group to another consumer",
		Long: `claim moves pending messages to --to (default: this client's name). The
delivery count does not change. The new owner, or whichever client of the
group reclaims idle messages, takes them up after the message timeout.
With --all it claims every pending message that matches the rule, and
needs --to.`,
		Args: bulk.args,
		RunE: a.withPending("claim", func(ctx context.Context, in core.PendingInspector, args []string) error {
			if bulk.all {
				if to == "" {
					return usageErrorf("claim --all needs --to CONSUMER (spectacles groups STREAM lists the consumers)")
				}
				bulk.rule.MinIdle = minIdle
				return a.claimAll(ctx, in, args, bulk, to, asJSON)
			}
			if to == "" {
				to = cliClient()
			}
			got, err := in.Claim(ctx, args[0], args[1], to, minIdle, args[2:]...)
			if err != nil {
				return err
			}
			if got == nil {
				got = []string{}
			}
			res := claimJSON{target: newTarget(args[0], args[1]), Consumer: to, ConsumerBase64: base64IfInvalid(to), ClaimedIDs: got}
			return a.output(asJSON, res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "claimed %d of %d for %s\n", len(got), len(args)-2, quote(to))
			})
		}),
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.StringVar(&to, "to", "", "consumer that takes the messages (default: spectacles-cli@HOST)")
	f.DurationVar(&minIdle, "min-idle", 0, "only claim messages idle at least this long")
	bulk.add(f, false)
	return cmd
}

func (a *app) dlqCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, requeue or add dead letters (EVENT:dlq)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var (
		asJSON bool
		q      core.RangeQuery
		reason string
		bulk   bulkFlags
	)
	list := &cobra.Command{
		Use:   "list EVENT",
		Short: "List the dead letters of an event, oldest first",
		Args:  cobra.ExactArgs(1),
		RunE: a.withInspector(func(ctx context.Context, in core.Inspector, args []string) error {
			entries, err := in.Entries(ctx, core.DeadLetterEvent(args[0]), q)
			if err != nil {
				return err
			}
			views := make([]messageJSON, 0, len(entries))
			for _, e := range entries {
				views = append(views, entryView(core.DeadLetterEvent(args[0]), e, a.cfg.Codec))
			}
			return a.output(asJSON, views, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tORIGINAL\tGROUP\tDELIVERIES\tREASON")
				for _, e := range entries {
					h := e.Headers
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", quote(e.ID), quote(h[core.HeaderID]), quote(h[core.HeaderGroup]), quote(h[core.HeaderDeliveries]),
						quote(h[core.HeaderReason]))
				}
			})
		}),
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list.Flags().StringVar(&q.After, "after", "", "start after this id")
	list.Flags().IntVar(&q.Count, "count", 100, "page size")
	requeue := &cobra.Command{
		Use:   "requeue EVENT ID...",
		Short: "Publish dead letters again under their event and remove them",
		Args:  cobra.MinimumNArgs(2),
		RunE: a.withInspector(func(ctx context.Context, in core.Inspector, args []string) error {
			ids, err := in.Requeue(ctx, args[0], args[1:]...)
			if ids == nil {
				ids = []string{}
			}
			res := requeueJSON{Event: args[0], EventBase64: base64IfInvalid(args[0]), RequeuedIDs: ids}
			if oerr := a.output(asJSON, res, func(w *tabwriter.Writer) {
				list := make([]string, len(ids))
				for i, id := range ids {
					list[i] = quote(id)
				}
				fmt.Fprintf(w, "requeued %d: %s\n", len(ids), strings.Join(list, " "))
			}); err == nil {
				err = oerr
			}
			return err
		}),
	}
	requeue.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	move := &cobra.Command{
		Use:   "move STREAM GROUP ID... | --all [--consumer C] [--min-idle D] [--min-deliveries N]",
		Short: "Move pending messages of a group to the dead letters, with a reason",
		Args:  bulk.args,
		RunE: a.withPending("dlq move", func(ctx context.Context, in core.PendingInspector, args []string) error {
			if bulk.all {
				return a.moveAll(ctx, in, args, bulk, reason, asJSON)
			}
			n, err := in.DeadLetter(ctx, args[0], args[1], reason, args[2:]...)
			if err != nil {
				return err
			}
			dl := core.DeadLetterEvent(args[0])
			res := moveJSON{target: newTarget(args[0], args[1]), MovedCount: n, Event: dl, EventBase64: base64IfInvalid(dl)}
			return a.output(asJSON, res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "moved %d of %d to %s\n", n, len(args)-2, quote(core.DeadLetterEvent(args[0])))
			})
		}),
	}
	move.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	move.Flags().StringVar(&reason, "reason", "moved by hand", "why, kept with each dead letter")
	bulk.add(move.Flags(), true)
	cmd.AddCommand(list, requeue, move)
	return cmd
}

// entryView decodes an entry of event for printing.
func entryView(event string, e core.Entry, codec core.Codec) messageJSON {
	data, err := core.NewPayload(e.Raw, codec).Data()
	return newMessageJSON(event, e.ID, e.Headers, e.Raw, data, err)
}

func (a *app) tailCommand() *cobra.Command {
	var (
		from     string
		filter   string
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "tail EVENT...",
		Short: "Print new messages of streams as they arrive, without consuming them",
		Long: `tail reads streams without a consumer group, so it takes nothing away from
the services that consume them. It prints one JSON line per message
({"event","id","data"}) until interrupted.`,
		Args: cobra.MinimumNArgs(1),
		RunE: a.withInspector(func(ctx context.Context, in core.Inspector, args []string) error {
			last := map[string]string{}
			for _, ev := range args {
				switch from {
				case "$", "":
					newest, err := in.Entries(ctx, ev, core.RangeQuery{Reverse: true, Count: 1})
					if err != nil {
						return err
					}
					if len(newest) == 1 {
						last[ev] = newest[0].ID
					}
				case "0", "-":
				default:
					last[ev] = from
				}
			}
			out := &lineWriter{w: a.stdout}
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				for _, ev := range args {
					for {
						page, err := in.Entries(ctx, ev, core.RangeQuery{After: last[ev], Count: 500})
						if err != nil {
							if ctx.Err() != nil {
								return nil
							}
							return err
						}
						for _, e := range page {
							last[ev] = e.ID
							if filter != "" && !strings.Contains(string(e.Raw), filter) {
								continue
							}
							if err := out.write(entryView(ev, e, a.cfg.Codec)); err != nil {
								return err
							}
						}
						if len(page) < 500 {
							break
						}
					}
				}
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
			}
		}),
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "$", "where to start: $ (new messages only), 0 (the beginning) or an id")
	f.StringVar(&filter, "filter", "", "only messages whose payload contains this text")
	f.DurationVar(&interval, "interval", 250*time.Millisecond, "how often to look for new messages")
	return cmd
}

func (a *app) sendCommand() *cobra.Command {
	var (
		guild      string
		shard      int
		shardCount int
		asJSON     bool
	)
	cmd := &cobra.Command{
		Use:   "send (--guild ID | --shard N) PACKET",
		Short: "Send a gateway packet through the broker: SEND by guild, or to a shard id",
		Long: `send publishes a packet ({"op": 4, "d": {...}}) for the gateway to send to
Discord: with --guild as SEND {guild_id, packet}, routed by the gateway to
(guild_id >> 22) % shard_count; with --shard straight to that shard's event.
With --shard-count (or a gateway that reports its status) it prints the shard a
guild routes to.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			ctx := cmd.Context()
			if (guild == "") == (shard < 0) {
				return usageErrorf("give exactly one of --guild and --shard")
			}
			data, err := a.readData(args)
			if err != nil {
				return err
			}
			raw, _ := json.Marshal(core.JSONValue(data))
			if _, err := discord.ValidatePacket(raw); err != nil {
				return usageError(err)
			}
			id := a.cfg.Identity()
			b, err := a.open(ctx, a.options(id))
			if err != nil {
				return err
			}
			defer closeBroker(b, &err)
			event, payload := strconv.Itoa(shard), any(data)
			routed := shard
			if guild != "" {
				gid, err := core.ParseSnowflake(guild)
				if err != nil {
					return usageError(err)
				}
				event, payload = gateway.SendEvent, map[string]any{"guild_id": guild, "packet": data}
				if shardCount <= 0 {
					if rc, done, err := a.redisClient(b); err == nil && rc != nil {
						if nodes, err := redisgw.ReadNodeStatuses(ctx, rc); err == nil && len(nodes) > 0 {
							shardCount = nodes[0].ShardCount
						}
						done()
					}
				}
				routed = -1
				if shardCount > 0 {
					routed = core.ShardID(gid, shardCount)
				}
			}
			if payload, err = gateway.EncodePacket(event, payload); err != nil {
				return usageError(err)
			}
			msgID, err := b.Publish(ctx, event, payload)
			if err != nil {
				return err
			}
			res := sendJSON{Event: event, ID: msgID}
			if routed >= 0 {
				res.Shard = &routed
			}
			return a.output(asJSON, res, func(w *tabwriter.Writer) {
				if routed >= 0 {
					fmt.Fprintf(w, "published %s %s (shard %d)\n", quote(event), quote(msgID), routed)
				} else {
					fmt.Fprintf(w, "published %s %s (shard count unknown: the gateway routes it)\n", quote(event), quote(msgID))
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&guild, "guild", "", "guild id: publish as SEND, routed by the gateway")
	f.IntVar(&shard, "shard", -1, "shard id: publish to that shard's event")
	f.IntVar(&shardCount, "shard-count", 0, "shard count, to print where a guild routes")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) shardsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "shards",
		Short: "Show the shards of the gateway nodes that report to this Redis",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			ctx := cmd.Context()
			b, err := a.open(ctx, a.options(a.cfg.Identity()))
			if err != nil {
				return err
			}
			defer closeBroker(b, &err)
			rc, doneRedis, err := a.redisClient(b)
			if err != nil {
				return err
			}
			defer doneRedis()
			if rc == nil {
				return usageErrorf("gateway nodes report their shards through Redis: set REDIS_URL")
			}
			nodes, err := redisgw.ReadNodeStatuses(ctx, rc)
			if err != nil {
				return err
			}
			views := mapViews(nodes, newNodeJSON)
			return a.output(asJSON, views, func(w *tabwriter.Writer) {
				if len(nodes) == 0 {
					fmt.Fprintln(w, "no gateway node reports to this Redis")
					return
				}
				fmt.Fprintln(w, "NODE\tSHARD\tSTATE\tLATENCY\tSEQ\tGUILDS\tRECONNECTS\tLAST CLOSE")
				now := time.Now()
				for _, n := range nodes {
					stale := ""
					if n.Stale(now) {
						stale = "STALE " // its last report: the states may be wrong now
					}
					for _, s := range n.Shards {
						fmt.Fprintf(w, "%s%s/%s\t%d/%d\t%s\t%s\t%d\t%d (+%d unavailable)\t%d\t%s\n", stale, quote(n.Group), quote(n.Client), s.ID, s.Count,
							s.State, ms(s.Latency), s.Seq, s.GuildsAvailable, s.GuildsUnavailable, s.Reconnects, closeText(s))
					}
				}
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func closeText(s gateway.Status) string {
	if s.LastCloseCode == 0 && s.LastCloseReason == "" {
		return "-"
	}
	if s.LastCloseCode == 0 { // the shard's own end ("stopped by operator")
		return termtext.Escape(s.LastCloseReason)
	}
	return fmt.Sprintf("%d %s", s.LastCloseCode, termtext.Escape(s.LastCloseReason))
}

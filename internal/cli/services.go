package cli

import (
	"context"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/core"
)

// instanceJSON is one item of `services --json`: one service instance
// as presence knows it (schema: jsonout.go).
type instanceJSON struct {
	Group        string `json:"group"`
	GroupBase64  string `json:"group_base64,omitempty"`
	Client       string `json:"client"`
	ClientBase64 string `json:"client_base64,omitempty"`
	Version      string `json:"version"`
	// Status is "online", or "stale" when its heartbeat is older than
	// its TTL (the instance is presumed dead).
	Status    string   `json:"status"`
	Events    []string `json:"events"`
	Calls     []string `json:"calls"`
	Session   string   `json:"session,omitempty"`
	Host      string   `json:"host,omitempty"`
	PID       int      `json:"pid,omitempty"`
	StartedAt string   `json:"started_at"`
	LastSeen  string   `json:"last_seen_at"`
	IdleMs    millis   `json:"idle_ms"`
	// Unhandled counts, per event, what the instance published that no
	// group consumes ([] when nothing).
	Unhandled []unhandledCountJSON `json:"unhandled"`
}

// unhandledCountJSON is one event of instanceJSON.Unhandled.
type unhandledCountJSON struct {
	Event        string `json:"event"`
	EventBase64  string `json:"event_base64,omitempty"`
	MessageCount uint64 `json:"message_count"`
}

// unhandledJSON is one item of `services --unhandled --json`: an event
// published, by any process, that no group consumes.
type unhandledJSON struct {
	Event          string   `json:"event"`
	EventBase64    string   `json:"event_base64,omitempty"`
	MessageCount   uint64   `json:"message_count"`
	PublisherCount int      `json:"publisher_count"`
	Publishers     []string `json:"publishers"`
	LastAt         string   `json:"last_at"`
}

func newUnhandledJSON(r core.UnhandledReport) unhandledJSON {
	return unhandledJSON{Event: r.Event, EventBase64: base64IfInvalid(r.Event), MessageCount: r.Count,
		PublisherCount: len(r.Publishers), Publishers: nonNil(r.Publishers), LastAt: r.LastAt.UTC().Format(time.RFC3339Nano)}
}

func newInstanceJSON(in core.Instance, now time.Time) instanceJSON {
	status := "online"
	if in.Stale(now) {
		status = "stale"
	}
	unhandled := make([]unhandledCountJSON, 0, len(in.Unhandled))
	for ev, n := range in.Unhandled {
		unhandled = append(unhandled, unhandledCountJSON{Event: ev, EventBase64: base64IfInvalid(ev), MessageCount: n})
	}
	sort.Slice(unhandled, func(i, j int) bool { return unhandled[i].Event < unhandled[j].Event })
	return instanceJSON{Group: in.Group, GroupBase64: base64IfInvalid(in.Group), Client: in.Client,
		ClientBase64: base64IfInvalid(in.Client), Version: in.Version, Status: status,
		Events: nonNil(in.Events), Calls: nonNil(in.Calls), Session: in.Session, Host: in.Host, PID: in.PID,
		StartedAt: in.StartedAt.UTC().Format(time.RFC3339Nano), LastSeen: in.LastSeen.UTC().Format(time.RFC3339Nano),
		IdleMs: millis(max(0, now.Sub(in.LastSeen))), Unhandled: unhandled}
}

// announceVersion is the version every spectacles command announces:
// "spectacles VERSION" (VERSION "devel" for a build from a source tree).
func announceVersion() string {
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "spectacles " + v
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// presenceEventJSON is one item of `services --history N --json`.
type presenceEventJSON struct {
	Event        string `json:"event"`
	Group        string `json:"group"`
	GroupBase64  string `json:"group_base64,omitempty"`
	Client       string `json:"client"`
	ClientBase64 string `json:"client_base64,omitempty"`
	Version      string `json:"version"`
	Session      string `json:"session,omitempty"`
	Reason       string `json:"reason,omitempty"`
	At           string `json:"at"`
}

func newPresenceEventJSON(pe core.PresenceEvent) presenceEventJSON {
	in := pe.Instance
	return presenceEventJSON{Event: pe.Event, Group: in.Group, GroupBase64: base64IfInvalid(in.Group), Client: in.Client,
		ClientBase64: base64IfInvalid(in.Client), Version: in.Version, Session: in.Session, Reason: pe.Reason,
		At: pe.At.UTC().Format(time.RFC3339Nano)}
}

func (a *app) servicesCommand() *cobra.Command {
	var asJSON, unhandledOnly bool
	var history int
	cmd := &cobra.Command{
		Use:   "services",
		Short: "List the services and instances that announce themselves (presence)",
		Long: `List every service instance that announces itself through the broker: its
group, client, version, the events it consumes and the calls it answers,
and when it was last heard from. An instance whose heartbeat is older
than its TTL (12s by default) is "stale": it died without a word (kill -9)
and will be reported offline. A group is online while one of its
instances is.

Every library client and every spectacles command that consumes
announces itself, on Redis (keys with a TTL), RabbitMQ and the hub.
--history N prints the latest presence events instead (Redis and the
hub): who connected, disconnected (closed, lost, expired), and which
groups came online or went offline.

Events published that no group consumes are listed below the instances
(UNHANDLED), with how many messages and who published them; --unhandled
prints only those. On Redis every publisher reports them (the
spectacles.unhandled stream, past hour); on RabbitMQ the live processes
answer with theirs (a process that exited is not seen).`,
		Example: `  spectacles services
  spectacles services --json
  spectacles services --history 20
  spectacles services --unhandled --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			ctx := cmd.Context()
			id := core.Identity{Group: "spectacles-cli", Client: cliClient()}
			if a.cfg.Group != "" {
				id.Group = a.cfg.Group
			}
			opts := a.options(id)
			opts.Announce.Disabled = true // a reader does not announce itself
			b, err := a.openBroker(ctx, opts, true)
			if err != nil {
				return err
			}
			defer closeBroker(b, &err)
			if history > 0 {
				return a.presenceHistory(ctx, b, history, asJSON)
			}
			pr, ok := b.(core.PresenceReader)
			if !ok {
				return fmt.Errorf("services: %w (BROKER_TYPE=%s keeps no presence)", core.ErrUnsupported, a.cfg.BrokerType)
			}
			if unhandledOnly && asJSON {
				reports, err := unhandledReports(ctx, b, nil)
				if err != nil {
					return err
				}
				return a.output(true, mapViews(reports, newUnhandledJSON), nil)
			}
			list, err := instances(ctx, pr)
			if err != nil {
				return err
			}
			now := time.Now()
			views := make([]instanceJSON, 0, len(list))
			for _, in := range list {
				views = append(views, newInstanceJSON(in, now))
			}
			if asJSON {
				return a.output(true, views, nil)
			}
			reports, err := unhandledReports(ctx, b, list)
			if err != nil {
				return err
			}
			if !unhandledOnly {
				if err := a.output(false, views, func(w *tabwriter.Writer) { servicesTable(w, views) }); err != nil {
					return err
				}
			}
			return a.output(false, reports, func(w *tabwriter.Writer) { unhandledTable(w, reports, !unhandledOnly) })
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&unhandledOnly, "unhandled", false, "print only the events published that no group consumes")
	cmd.Flags().IntVar(&history, "history", 0, "print the latest N presence events (connected, disconnected, online, offline) instead")
	return cmd
}

// presenceHistory prints the latest n presence events, newest first.
func (a *app) presenceHistory(ctx context.Context, b core.Broker, n int, asJSON bool) error {
	ph, ok := b.(core.PresenceHistory)
	if !ok {
		return fmt.Errorf("services --history: %w (BROKER_TYPE=%s keeps no presence history; consume the spectacles.* presence events instead)",
			core.ErrUnsupported, a.cfg.BrokerType)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := ph.PresenceHistory(ctx, n)
	if err != nil {
		return fmt.Errorf("services: %w", err)
	}
	views := mapViews(list, newPresenceEventJSON)
	return a.output(asJSON, views, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "AT\tEVENT\tGROUP\tCLIENT\tVERSION\tREASON")
		for _, v := range views {
			at, _ := time.Parse(time.RFC3339Nano, v.At)
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", at.Local().Format("15:04:05.000"), strings.TrimPrefix(v.Event, "spectacles."),
				quote(v.Group), quote(v.Client), quote(v.Version), quote(v.Reason))
		}
	})
}

// unhandledReports reads the events published that no group consumes:
// from the broker's core.UnhandledReader when it is one, else from the
// instances' announcements (list, or read now when nil).
func unhandledReports(ctx context.Context, b core.Broker, list []core.Instance) ([]core.UnhandledReport, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if ur, ok := b.(core.UnhandledReader); ok {
		reports, err := ur.UnhandledReports(ctx)
		if err != nil {
			return nil, fmt.Errorf("services: %w", err)
		}
		return reports, nil
	}
	if list == nil {
		pr, ok := b.(core.PresenceReader)
		if !ok {
			return nil, nil
		}
		var err error
		if list, err = instances(ctx, pr); err != nil {
			return nil, err
		}
	}
	return core.MergeUnhandled(nil, list), nil
}

// unhandledTable prints the unhandled events (a blank line first when
// after the instances); nothing when there are none, unless alone.
func unhandledTable(w *tabwriter.Writer, reports []core.UnhandledReport, after bool) {
	if len(reports) == 0 {
		if !after {
			fmt.Fprintln(w, "no event was reported published without a group consuming it")
		}
		return
	}
	if after {
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "UNHANDLED EVENT\tMESSAGES\tPUBLISHERS\tLAST REPORT")
	for _, r := range reports {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", quote(r.Event), r.Count, quoteList(r.Publishers), r.LastAt.Local().Format("15:04:05"))
	}
}

func instances(ctx context.Context, pr core.PresenceReader) ([]core.Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := pr.Instances(ctx)
	if err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	sort.SliceStable(list, func(i, j int) bool {
		if list[i].Group != list[j].Group {
			return list[i].Group < list[j].Group
		}
		return list[i].Client < list[j].Client
	})
	return list, nil
}

// servicesTable prints one line per group (online while an instance is),
// then its instances.
func servicesTable(w *tabwriter.Writer, views []instanceJSON) {
	fmt.Fprintln(w, "GROUP\tSTATUS\tCLIENT\tVERSION\tLAST SEEN\tEVENTS\tCALLS")
	for i := 0; i < len(views); {
		j := i
		online := 0
		for j < len(views) && views[j].Group == views[i].Group {
			if views[j].Status == "online" {
				online++
			}
			j++
		}
		status := "offline"
		if online > 0 {
			status = "online"
		}
		fmt.Fprintf(w, "%s\t%s\t%d of %d instances\t\t\t\t\n", quote(views[i].Group), status, online, j-i)
		for _, v := range views[i:j] {
			fmt.Fprintf(w, "\t%s\t%s\t%s\t%s ago\t%s\t%s\n", v.Status, quote(v.Client), quote(v.Version),
				ms(time.Duration(v.IdleMs)), quoteList(v.Events), quoteList(v.Calls))
		}
		i = j
	}
}

func quoteList(names []string) string {
	if len(names) == 0 {
		return "-"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = quote(n)
	}
	return strings.Join(q, ",")
}

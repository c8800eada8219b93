package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// Presence on RabbitMQ, through the exchange and the connection: the
// consuming connection of a client carries its announcement (group,
// client, version, calls, session) in the client property
// PresenceProperty, and the events it consumes are its consumers' queues,
// so that Instances reads both from the management API: an instance is
// listed while its connection lives (RabbitMQ drops the connection of a
// process killed with -9 at once, or after its heartbeat timeout on a lost
// network). The presence events are published to the client's exchange
// with the event name as routing key: EventInstanceConnected (and
// EventGroupOnline when no other instance of the group was connected) at
// the first Consume (once the management API lists it, a few seconds
// later), EventInstanceDisconnected (and EventGroupOffline when
// it was the last) at Close. An instance that dies without a word is not
// reported by an event: it is only gone from Instances.
const PresenceProperty = "spectacles_presence"

// presenceProps is the JSON of PresenceProperty.
type presenceProps struct {
	Group     string    `json:"group"`
	Client    string    `json:"client"`
	Version   string    `json:"version,omitempty"`
	Calls     []string  `json:"calls,omitempty"`
	Session   string    `json:"session"`
	Exchange  string    `json:"exchange"`
	Subgroup  string    `json:"subgroup,omitempty"`
	Host      string    `json:"host,omitempty"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// presence is a broker's announcement.
type presence struct {
	b     *Broker
	props presenceProps

	mu     sync.Mutex
	joined bool
	left   bool
	// The arrival is published in the background (see consumed); leave
	// stops and waits for it.
	joinCancel context.CancelFunc
	joinDone   chan struct{}
	announced  bool
}

func newPresence(b *Broker) *presence {
	var s [8]byte
	_, _ = rand.Read(s[:])
	host, _ := os.Hostname()
	id := b.cfg.Identity
	return &presence{b: b, props: presenceProps{Group: id.Group, Client: id.Client, Version: b.cfg.Announce.Version,
		Calls: b.cfg.Announce.Calls, Session: hex.EncodeToString(s[:]), Exchange: b.cfg.Exchange, Subgroup: b.cfg.Subgroup,
		Host: host, PID: os.Getpid(), StartedAt: time.Now().UTC()}}
}

// property returns the client property value, or "" when presence is off.
func (p *presence) property() string {
	if p.b.cfg.Announce.Disabled || p.props.Group == "" {
		return ""
	}
	raw, _ := json.Marshal(p.props)
	return string(raw)
}

func (p *presence) instance(events []string) core.Instance {
	return core.Instance{Group: p.props.Group, Client: p.props.Client, Version: p.props.Version, Events: events,
		Calls: callsOf(p.props.Calls, events), Session: p.props.Session, Host: p.props.Host, PID: p.props.PID,
		StartedAt: p.props.StartedAt, LastSeen: time.Now().UTC(), TTLMs: core.DefaultPresenceTTL.Milliseconds()}
}

func callsOf(calls, events []string) []string {
	var out []string
	for _, ev := range events {
		if slices.Contains(calls, ev) {
			out = append(out, ev)
		}
	}
	return out
}

// consumed publishes the instance's arrival, the first time it consumes.
// The management API shows a new connection and its consumers only after
// a few seconds (its statistics interval), so the arrival is published in
// the background once the instance sees itself there: then any instance
// that joins after the event counts it.
func (p *presence) consumed(_ context.Context, events []string) {
	if p.property() == "" {
		return
	}
	p.mu.Lock()
	if p.joined || p.left {
		p.mu.Unlock()
		return
	}
	p.joined = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	p.joinCancel, p.joinDone = cancel, make(chan struct{})
	p.mu.Unlock()
	go func() {
		defer close(p.joinDone)
		defer cancel()
		for !p.visible(ctx) {
			select {
			case <-ctx.Done():
				p.b.log.Debug("presence: the management API never showed this instance; its arrival is not published")
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		others := p.groupMembers(ctx)
		in := p.instance(p.b.declaredEvents())
		p.publish(ctx, core.EventInstanceConnected, in, "")
		if others == 0 {
			p.publish(ctx, core.EventGroupOnline, in, "")
		}
		p.mu.Lock()
		p.announced = true
		p.mu.Unlock()
	}()
	_ = events
}

// visible reports whether the management API lists this instance.
func (p *presence) visible(ctx context.Context) bool {
	list, err := p.b.Instances(ctx)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(list, func(in core.Instance) bool { return in.Session == p.props.Session })
}

// leave publishes the instance's departure, if its arrival was; Close runs
// it first, while publishing still works.
func (p *presence) leave() {
	p.mu.Lock()
	joined := p.joined && !p.left
	p.left = true
	cancel, done := p.joinCancel, p.joinDone
	p.mu.Unlock()
	if !joined {
		return
	}
	cancel()
	<-done
	p.mu.Lock()
	announced := p.announced
	p.mu.Unlock()
	if !announced {
		return
	}
	ctx, cancelLeave := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelLeave()
	others := p.groupMembers(ctx)
	in := p.instance(p.b.declaredEvents())
	p.publish(ctx, core.EventInstanceDisconnected, in, "closed")
	if others == 0 {
		p.publish(ctx, core.EventGroupOffline, in, "closed")
	}
}

// groupMembers counts the other live instances of the group (-1 when the
// management API cannot tell).
func (p *presence) groupMembers(ctx context.Context) int {
	list, err := p.b.Instances(ctx)
	if err != nil {
		p.b.log.Debug("presence: cannot list instances", "err", err)
		return -1
	}
	n := 0
	for _, in := range list {
		if in.Group == p.props.Group && in.Session != p.props.Session {
			n++
		}
	}
	return n
}

func (p *presence) publish(ctx context.Context, event string, in core.Instance, reason string) {
	raw, err := p.b.cfg.Codec.Marshal(core.PresenceEvent{Event: event, Instance: in, Reason: reason, At: time.Now().UTC()})
	if err != nil {
		return
	}
	msg := p.b.message(raw)
	if err := p.b.pub.publish(ctx, p.b.closeCtx.Done(), p.b.cfg.Exchange, event, &msg); err != nil {
		p.b.log.Warn("presence: publishing an event failed", "event", event, "err", err)
	}
}

// Instances lists the live instances from the management API: every
// connection that carries PresenceProperty and has consumers, with the
// events of their queues.
func (b *Broker) Instances(ctx context.Context) ([]core.Instance, error) {
	m := b.insp.m
	if m == nil {
		return nil, fmt.Errorf("amqp: presence needs the management API: %w", core.ErrUnsupported)
	}
	var conns []struct {
		Name  string         `json:"name"`
		Props map[string]any `json:"client_properties"`
	}
	if err := m.do(ctx, http.MethodGet, m.path("vhosts", m.vhost, "connections"), url.Values{"columns": {"name,client_properties"}}, nil, &conns); err != nil {
		return nil, fmt.Errorf("amqp: presence: %w", err)
	}
	byConn := map[string]*core.Instance{}
	props := map[string]presenceProps{}
	for _, c := range conns {
		s, _ := c.Props[PresenceProperty].(string)
		var pp presenceProps
		if s == "" || json.Unmarshal([]byte(s), &pp) != nil || pp.Group == "" {
			continue
		}
		props[c.Name] = pp
	}
	if len(props) == 0 {
		return []core.Instance{}, nil
	}
	var consumers []struct {
		Queue struct {
			Name string `json:"name"`
		} `json:"queue"`
		// An object, or [] for a consumer whose channel the API no longer
		// knows (it is closing).
		ChannelDetails json.RawMessage `json:"channel_details"`
	}
	if err := m.do(ctx, http.MethodGet, m.path("consumers", m.vhost), nil, nil, &consumers); err != nil {
		return nil, fmt.Errorf("amqp: presence: %w", err)
	}
	now := time.Now().UTC()
	for _, c := range consumers {
		var details struct {
			ConnectionName string `json:"connection_name"`
		}
		if json.Unmarshal(c.ChannelDetails, &details) != nil {
			continue
		}
		pp, ok := props[details.ConnectionName]
		if !ok {
			continue
		}
		prefix := pp.Exchange + ":"
		if pp.Subgroup != "" {
			prefix += pp.Subgroup + ":"
		}
		ev, ok := strings.CutPrefix(c.Queue.Name, prefix)
		if !ok {
			continue
		}
		in := byConn[details.ConnectionName]
		if in == nil {
			in = &core.Instance{Group: pp.Group, Client: pp.Client, Version: pp.Version, Session: pp.Session,
				Host: pp.Host, PID: pp.PID, StartedAt: pp.StartedAt, LastSeen: now, TTLMs: core.DefaultPresenceTTL.Milliseconds()}
			byConn[details.ConnectionName] = in
		}
		if !slices.Contains(in.Events, ev) {
			in.Events = append(in.Events, ev)
		}
	}
	out := make([]core.Instance, 0, len(byConn))
	for name, in := range byConn {
		sort.Strings(in.Events)
		in.Calls = callsOf(props[name].Calls, in.Events)
		out = append(out, *in)
	}
	return out, nil
}

var _ core.PresenceReader = (*Broker)(nil)

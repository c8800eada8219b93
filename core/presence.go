package core

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// Presence: every client that consumes announces itself (its Instance)
// with a heartbeat, and the brokers publish presence events as ordinary
// Spectacles events, so that any service can consume them:
//
//   - EventInstanceConnected and EventInstanceDisconnected, every time an
//     instance joins or leaves (or is found dead: its heartbeat expired);
//   - EventGroupOnline when the first instance of a group appears, and
//     EventGroupOffline when its last one leaves, once each;
//   - EventUnhandled when a message was published that no group consumes.
//
// The data of each is a PresenceEvent (JSON field names below; msgpack
// uses the same). How a broker keeps the instances is its own: Redis keys
// with a TTL, an AMQP exchange, the hub's connections.
const (
	EventInstanceConnected    = "spectacles.instance.connected"
	EventInstanceDisconnected = "spectacles.instance.disconnected"
	EventGroupOnline          = "spectacles.group.online"
	EventGroupOffline         = "spectacles.group.offline"
	EventUnhandled            = "spectacles.unhandled"
)

// PresenceEvents lists the presence event names, in the order above.
func PresenceEvents() []string {
	return []string{EventInstanceConnected, EventInstanceDisconnected, EventGroupOnline, EventGroupOffline, EventUnhandled}
}

// IsPresenceEvent reports whether event is one of PresenceEvents: those are
// published by the brokers and are never reported as unhandled.
func IsPresenceEvent(event string) bool {
	for _, e := range PresenceEvents() {
		if e == event {
			return true
		}
	}
	return false
}

// Presence timing defaults: an instance refreshes its announcement every
// DefaultHeartbeat, and one not heard from for DefaultPresenceTTL is
// offline (a process killed with -9 is seen gone within it).
const (
	DefaultHeartbeat   = 4 * time.Second
	DefaultPresenceTTL = 12 * time.Second
)

// ErrUnhandled is wrapped by the error of a Call that no online instance
// can answer, when the broker knows so (from presence) before waiting.
var ErrUnhandled = errors.New("no online service handles this event")

// Instance is what one service instance announces about itself.
type Instance struct {
	// Group and Client are the instance's identity.
	Group  string `json:"group" msgpack:"group"`
	Client string `json:"client" msgpack:"client"`
	// Version is the service's version, as it declared it (may be empty).
	Version string `json:"version,omitempty" msgpack:"version,omitempty"`
	// Events are the events it consumes.
	Events []string `json:"events,omitempty" msgpack:"events,omitempty"`
	// Calls are the events among them it answers.
	Calls []string `json:"calls,omitempty" msgpack:"calls,omitempty"`
	// Session tells apart two lives of one client name.
	Session string `json:"session,omitempty" msgpack:"session,omitempty"`
	// Host and PID say where it runs, when known.
	Host string `json:"host,omitempty" msgpack:"host,omitempty"`
	PID  int    `json:"pid,omitempty" msgpack:"pid,omitempty"`
	// StartedAt is when it announced itself first; LastSeen its latest
	// heartbeat (or, on the hub, its latest command).
	StartedAt time.Time `json:"started_at" msgpack:"started_at"`
	LastSeen  time.Time `json:"last_seen" msgpack:"last_seen"`
	// TTLMs is how long after LastSeen it counts as gone, in
	// milliseconds (0: DefaultPresenceTTL).
	TTLMs int64 `json:"ttl_ms" msgpack:"ttl_ms"`
	// Unhandled counts, per event, the messages this instance published
	// since it started that no group consumes (see UnhandledCounter);
	// absent when there were none.
	Unhandled map[string]uint64 `json:"unhandled,omitempty" msgpack:"unhandled,omitempty"`
}

// Stale reports whether the instance was not heard from within its TTL at
// now (DefaultPresenceTTL when it has none).
func (i Instance) Stale(now time.Time) bool {
	ttl := time.Duration(i.TTLMs) * time.Millisecond
	if ttl <= 0 {
		ttl = DefaultPresenceTTL
	}
	return now.Sub(i.LastSeen) > ttl
}

// PresenceEvent is the data of every presence event.
type PresenceEvent struct {
	// Event is the presence event's name (one of PresenceEvents).
	Event string `json:"event" msgpack:"event"`
	// Instance is the instance concerned (for group events, the first or
	// last one; for EventUnhandled, the publisher when known).
	Instance Instance `json:"instance" msgpack:"instance"`
	// Reason says why an instance left: "closed" (it said goodbye),
	// "lost" (its connection broke), "expired" (its heartbeat stopped).
	// For EventUnhandled it says what was not handled.
	Reason string `json:"reason,omitempty" msgpack:"reason,omitempty"`
	// Unhandled is the event nobody consumes (EventUnhandled only).
	Unhandled string `json:"unhandled,omitempty" msgpack:"unhandled,omitempty"`
	// Count and Total (EventUnhandled only) are how many messages of
	// Unhandled the publisher (Instance) published that no group consumes:
	// since its previous report of that event, and since it started.
	// Brokers report each event at most once per UnhandledInterval.
	Count uint64 `json:"count,omitempty" msgpack:"count,omitempty"`
	Total uint64 `json:"total,omitempty" msgpack:"total,omitempty"`
	// At is when the broker saw it happen.
	At time.Time `json:"at" msgpack:"at"`
}

// Announcement is what a client adds to its identity when it announces
// itself: Options.Announce.
type Announcement struct {
	// Version is the service's version.
	Version string
	// Calls are the consumed events that the service answers.
	Calls []string
	// Disabled turns presence off for this client: it announces nothing.
	Disabled bool
	// Heartbeat and TTL override DefaultHeartbeat and DefaultPresenceTTL.
	Heartbeat, TTL time.Duration
}

// PresenceReader is implemented by brokers that can list the instances
// they know of, live and (while remembered) gone.
type PresenceReader interface {
	// Instances returns the instances the broker knows, with LastSeen
	// telling how fresh each is.
	Instances(ctx context.Context) ([]Instance, error)
}

// PresenceHistory is implemented by brokers that remember recent presence
// events.
type PresenceHistory interface {
	// PresenceHistory returns up to n of the latest presence events (of
	// every kind but EventUnhandled), newest first.
	PresenceHistory(ctx context.Context, n int) ([]PresenceEvent, error)
}

// UnhandledInterval is how often, at most, a broker reports an event that
// was published and that no group consumes (an EventUnhandled per event,
// carrying the count): the Redis driver also checks the streams it
// published to that often, off the publish path.
const UnhandledInterval = 5 * time.Second

// CountsAsUnhandled reports whether a message of event that no group
// consumes is reported as unhandled: presence events and dead letters are
// not (they are there to be read when wanted).
func CountsAsUnhandled(event string) bool {
	if IsPresenceEvent(event) {
		return false
	}
	_, dlq := IsDeadLetterEvent(event)
	return !dlq
}

// UnhandledCounter is implemented by brokers that count the messages they
// published that no group consumes.
type UnhandledCounter interface {
	// UnhandledCounts returns, per event, how many messages this broker
	// published since it opened that no group consumes (a new map; empty
	// when there were none). A broker may learn it a few seconds after
	// the publish (the Redis driver checks every UnhandledInterval).
	UnhandledCounts() map[string]uint64
}

// UnhandledReport is what a broker knows, across processes, of one event
// that was published and that no group consumes.
type UnhandledReport struct {
	// Event is the event nobody consumes.
	Event string
	// Count is how many such messages the publishers reported (the sum of
	// their latest totals), and Publishers who they are ("group/client",
	// or the client alone without a group).
	Count      uint64
	Publishers []string
	// LastAt is the latest report.
	LastAt time.Time
}

// UnhandledReader is implemented by brokers that can tell which events
// were published, by any process, that no group consumes: from the
// EventUnhandled events they keep, or from the instances' announcements.
type UnhandledReader interface {
	// UnhandledReports returns one report per event, most messages first.
	UnhandledReports(ctx context.Context) ([]UnhandledReport, error)
}

// MergeUnhandled builds the reports of UnhandledReader from EventUnhandled
// events (any order) and instances' announcements: per publisher (its
// session, else its group and client) and event, the largest total seen,
// summed per event over the publishers. Reports come most messages first,
// then by event name.
func MergeUnhandled(events []PresenceEvent, instances []Instance) []UnhandledReport {
	type key struct{ publisher, event string }
	type seen struct {
		total uint64
		name  string
		at    time.Time
	}
	totals := map[key]seen{}
	add := func(in Instance, event string, total uint64, at time.Time) {
		if event == "" || total == 0 || !CountsAsUnhandled(event) {
			return
		}
		name := in.Client
		if in.Group != "" {
			name = in.Group + "/" + in.Client
		}
		pub := in.Session
		if pub == "" {
			pub = "\x00" + name
		}
		k := key{pub, event}
		s := totals[k]
		s.total, s.name = max(s.total, total), name
		if at.After(s.at) {
			s.at = at
		}
		totals[k] = s
	}
	for _, pe := range events {
		if pe.Event == EventUnhandled {
			add(pe.Instance, pe.Unhandled, max(pe.Total, pe.Count), pe.At)
		}
	}
	for _, in := range instances {
		for ev, n := range in.Unhandled {
			add(in, ev, n, in.LastSeen)
		}
	}
	byEvent := map[string]*UnhandledReport{}
	for k, s := range totals {
		r := byEvent[k.event]
		if r == nil {
			r = &UnhandledReport{Event: k.event}
			byEvent[k.event] = r
		}
		r.Count += s.total
		if !slices.Contains(r.Publishers, s.name) {
			r.Publishers = append(r.Publishers, s.name)
		}
		if s.at.After(r.LastAt) {
			r.LastAt = s.at
		}
	}
	out := make([]UnhandledReport, 0, len(byEvent))
	for _, r := range byEvent {
		slices.Sort(r.Publishers)
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b UnhandledReport) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Event, b.Event)
	})
	return out
}

package cli

import (
	"encoding/base64"
	"math"
	"strconv"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/bench"
	"github.com/spectacles-go/spectacles/gateway"
)

// The --json output of every command, in one schema (README, "JSON
// output"):
//
//   - keys are snake_case, and one key means one thing, with one JSON type,
//     in every command: stream, group, consumer, event and id are names and
//     message ids; deliveries is a delivery count; a number of things ends
//     in _count; a list of message ids ends in _ids.
//   - message ids (id, …_id, …_ids) are strings.
//   - durations are numbers of milliseconds under keys ending in _ms, with
//     a fraction when below a whole millisecond (idle times from Redis are
//     whole milliseconds).
//   - times are RFC 3339 strings in UTC under keys ending in _at.
//   - a name that is not valid UTF-8 keeps its key (with U+FFFD for each bad
//     byte) and adds KEY_base64, its exact bytes in standard base64.
//   - in data (a payload), a byte string (msgpack bin, or a str that is not
//     valid UTF-8) is text when it is valid UTF-8, else standard base64
//     (core.JSONValue).
//
// The types below are that schema; the command layer converts the core
// and gateway types to them, so that core stays free of presentation.

// millis is a duration as the JSON output prints it: a number of
// milliseconds.
type millis time.Duration

// MarshalJSON writes d in milliseconds, with as many decimals as it needs.
func (d millis) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(d)/float64(time.Millisecond), 'f', -1, 64), nil
}

// streamJSON is one item of `streams --json`.
type streamJSON struct {
	Stream       string `json:"stream"`
	StreamBase64 string `json:"stream_base64,omitempty"`
	Length       int64  `json:"length"`
	GroupCount   int    `json:"group_count"`
	FirstID      string `json:"first_id"`
	LastID       string `json:"last_id"`
}

func newStreamJSON(s core.StreamInfo) streamJSON {
	return streamJSON{Stream: s.Name, StreamBase64: base64IfInvalid(s.Name), Length: s.Length, GroupCount: s.Groups,
		FirstID: s.FirstID, LastID: s.LastID}
}

// groupJSON is one item of `groups --json`.
type groupJSON struct {
	Stream          string         `json:"stream"`
	StreamBase64    string         `json:"stream_base64,omitempty"`
	Group           string         `json:"group"`
	GroupBase64     string         `json:"group_base64,omitempty"`
	ConsumerCount   int            `json:"consumer_count"`
	PendingCount    int64          `json:"pending_count"`
	Lag             int64          `json:"lag"` // -1 when the server cannot tell
	LastDeliveredID string         `json:"last_delivered_id"`
	Consumers       []consumerJSON `json:"consumers"`
}

func newGroupJSON(stream string, g core.GroupInfo, cs []core.ConsumerInfo) groupJSON {
	out := groupJSON{Stream: stream, StreamBase64: base64IfInvalid(stream), Group: g.Name, GroupBase64: base64IfInvalid(g.Name),
		ConsumerCount: g.Consumers, PendingCount: g.Pending, Lag: g.Lag, LastDeliveredID: g.LastDeliveredID,
		Consumers: make([]consumerJSON, 0, len(cs))}
	for _, c := range cs {
		out.Consumers = append(out.Consumers, consumerJSON{Consumer: c.Name, ConsumerBase64: base64IfInvalid(c.Name),
			PendingCount: c.Pending, IdleMs: millis(c.Idle)})
	}
	return out
}

// consumerJSON is a consumer of a group in `groups --json`.
type consumerJSON struct {
	Consumer       string `json:"consumer"`
	ConsumerBase64 string `json:"consumer_base64,omitempty"`
	PendingCount   int64  `json:"pending_count"`
	IdleMs         millis `json:"idle_ms"`
}

// target names the stream and group a command acted on.
type target struct {
	Stream       string `json:"stream"`
	StreamBase64 string `json:"stream_base64,omitempty"`
	Group        string `json:"group"`
	GroupBase64  string `json:"group_base64,omitempty"`
}

func newTarget(stream, group string) target {
	return target{Stream: stream, StreamBase64: base64IfInvalid(stream), Group: group, GroupBase64: base64IfInvalid(group)}
}

// pendingJSON is one item of `pending --json`.
type pendingJSON struct {
	target
	ID             string `json:"id"`
	Consumer       string `json:"consumer"`
	ConsumerBase64 string `json:"consumer_base64,omitempty"`
	IdleMs         millis `json:"idle_ms"`
	Deliveries     int64  `json:"deliveries"`
}

func newPendingJSON(stream, group string, p core.PendingEntry) pendingJSON {
	return pendingJSON{target: newTarget(stream, group), ID: p.ID, Consumer: p.Consumer, ConsumerBase64: base64IfInvalid(p.Consumer),
		IdleMs: millis(p.Idle), Deliveries: p.Deliveries}
}

// ackJSON is what `ack --json` prints.
type ackJSON struct {
	target
	AckedCount int `json:"acked_count"`
}

// claimJSON is what `claim --json` prints.
type claimJSON struct {
	target
	Consumer       string   `json:"consumer"`
	ConsumerBase64 string   `json:"consumer_base64,omitempty"`
	ClaimedIDs     []string `json:"claimed_ids"`
}

// claimAllJSON is what `claim --all --json` prints: how many messages
// went to Consumer (their ids could be a hundred thousand).
type claimAllJSON struct {
	target
	Consumer       string `json:"consumer"`
	ConsumerBase64 string `json:"consumer_base64,omitempty"`
	ClaimedCount   int    `json:"claimed_count"`
}

// moveJSON is what `dlq move --json` prints: Event is the dead-letter
// event the messages went to.
type moveJSON struct {
	target
	MovedCount  int    `json:"moved_count"`
	Event       string `json:"event"`
	EventBase64 string `json:"event_base64,omitempty"`
}

// requeueJSON is what `dlq requeue --json` prints: Event is the event the
// dead letters were published under again, RequeuedIDs their new ids.
type requeueJSON struct {
	Event       string   `json:"event"`
	EventBase64 string   `json:"event_base64,omitempty"`
	RequeuedIDs []string `json:"requeued_ids"`
}

// messageJSON is one message as consume and tail print it, and an item
// of `dlq list --json`. Deliveries is set by consume only. A payload that
// cannot be decoded gives Error and RawBase64 instead of Data.
type messageJSON struct {
	Event         string            `json:"event"`
	EventBase64   string            `json:"event_base64,omitempty"`
	ID            string            `json:"id"`
	Deliveries    *int              `json:"deliveries,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	HeadersBase64 map[string]string `json:"headers_base64,omitempty"`
	Data          any               `json:"data,omitempty"`
	Error         string            `json:"error,omitempty"`
	RawBase64     string            `json:"raw_base64,omitempty"`
}

// newMessageJSON fills a messageJSON from a message's parts; data and
// derr are what decoding raw gave.
func newMessageJSON(event, id string, headers map[string]string, raw []byte, data any, derr error) messageJSON {
	m := messageJSON{Event: event, EventBase64: base64IfInvalid(event), ID: id, Headers: headers, HeadersBase64: headersBase64(headers)}
	if len(headers) == 0 {
		m.Headers = nil
	}
	switch {
	case derr != nil:
		m.Error = derr.Error()
		m.RawBase64 = base64.StdEncoding.EncodeToString(raw)
	case data == nil:
		m.Data = jsonNull{} // keep "data": null rather than dropping the key
	default:
		m.Data = core.JSONValue(data)
	}
	return m
}

// jsonNull encodes as null inside an omitempty field.
type jsonNull struct{}

// MarshalJSON writes null.
func (jsonNull) MarshalJSON() ([]byte, error) { return []byte("null"), nil }

// sendJSON is what `send --json` prints: Shard when the shard a guild
// routes to is known.
type sendJSON struct {
	Event string `json:"event"`
	ID    string `json:"id"`
	Shard *int   `json:"shard,omitempty"`
}

// nodeJSON is one gateway node of `shards --json`.
type nodeJSON struct {
	Group          string    `json:"group"`
	GroupBase64    string    `json:"group_base64,omitempty"`
	Client         string    `json:"client"`
	ClientBase64   string    `json:"client_base64,omitempty"`
	ShardCount     int       `json:"shard_count"`
	QueueLength    int       `json:"queue_length"`
	PublishedCount uint64    `json:"published_count"`
	UpdatedAt      time.Time `json:"updated_at"`
	// Stale reports a node silent for over gateway.NodeStaleAfter (killed,
	// hung or cut off): its shards are its last report.
	Stale  bool        `json:"stale"`
	Shards []shardJSON `json:"shards"`
}

// shardJSON is one shard of a gateway node in `shards --json`.
type shardJSON struct {
	Shard                 int           `json:"shard"`
	ShardCount            int           `json:"shard_count"`
	State                 gateway.State `json:"state"`
	SessionID             string        `json:"session_id,omitempty"`
	Seq                   int64         `json:"seq"`
	LatencyMs             millis        `json:"latency_ms"`
	LastHeartbeatACKAt    time.Time     `json:"last_heartbeat_ack_at,omitzero"`
	AvailableGuildCount   int           `json:"available_guild_count"`
	UnavailableGuildCount int           `json:"unavailable_guild_count"`
	ReconnectCount        int           `json:"reconnect_count"`
	DispatchCount         uint64        `json:"dispatch_count"`
	LastCloseCode         int           `json:"last_close_code,omitempty"`
	LastCloseReason       string        `json:"last_close_reason,omitempty"`
	Error                 string        `json:"error,omitempty"`
}

func newNodeJSON(n gateway.NodeStatus) nodeJSON {
	out := nodeJSON{Group: n.Group, GroupBase64: base64IfInvalid(n.Group), Client: n.Client, ClientBase64: base64IfInvalid(n.Client),
		ShardCount: n.ShardCount, QueueLength: n.Queue, PublishedCount: n.Published, UpdatedAt: n.UpdatedAt,
		Stale: n.Stale(time.Now()), Shards: make([]shardJSON, 0, len(n.Shards))}
	for _, s := range n.Shards {
		out.Shards = append(out.Shards, shardJSON{Shard: s.ID, ShardCount: s.Count, State: s.State, SessionID: s.SessionID, Seq: s.Seq,
			LatencyMs: millis(s.Latency), LastHeartbeatACKAt: s.LastHeartbeatACK, AvailableGuildCount: s.GuildsAvailable,
			UnavailableGuildCount: s.GuildsUnavailable, ReconnectCount: s.Reconnects, DispatchCount: s.Events,
			LastCloseCode: s.LastCloseCode, LastCloseReason: s.LastCloseReason, Error: s.Err})
	}
	return out
}

// benchJSON is the line bench prints. Latencies run from each Publish call
// to the handler receiving the message. A figure the run's phase does not
// measure is left out: rates and latencies of the other phases, and the
// server's CPU where it cannot be read (an embedded or non-Redis broker).
type benchJSON struct {
	Broker            string   `json:"broker"`
	Phase             string   `json:"phase"`
	MessageCount      int      `json:"message_count"`
	PayloadBytes      int      `json:"payload_bytes"`
	ConsumerCount     int      `json:"consumer_count"`
	PublisherCount    int      `json:"publisher_count"`
	BatchSize         int      `json:"batch_size"`
	PublishPerSec     *float64 `json:"publish_per_s,omitempty"`
	ConsumePerSec     *float64 `json:"consume_per_s,omitempty"`
	EndToEndPerSec    *float64 `json:"end_to_end_per_s,omitempty"`
	PublishMs         *millis  `json:"publish_ms,omitempty"`
	ConsumeMs         *millis  `json:"consume_ms,omitempty"`
	EndToEndMs        *millis  `json:"end_to_end_ms,omitempty"`
	LatencyP50Ms      *float64 `json:"latency_p50_ms,omitempty"`
	LatencyP90Ms      *float64 `json:"latency_p90_ms,omitempty"`
	LatencyP99Ms      *float64 `json:"latency_p99_ms,omitempty"`
	LatencyMaxMs      *float64 `json:"latency_max_ms,omitempty"`
	CPUMicrosPerMsg   *float64 `json:"cpu_us_per_msg,omitempty"`
	ServerCPUPerMsgUs *float64 `json:"server_cpu_us_per_msg,omitempty"`
}

func newBenchJSON(r bench.Result) benchJSON {
	out := benchJSON{Broker: r.Broker, Phase: "end-to-end", MessageCount: r.Messages, PayloadBytes: r.PayloadBytes,
		ConsumerCount: r.Consumers, PublisherCount: r.Publishers, BatchSize: r.Batch}
	if r.Phase != bench.PhaseEndToEnd {
		out.Phase = string(r.Phase)
	}
	ms := func(d time.Duration) *millis { m := millis(d); return &m }
	if r.Phase != bench.PhaseConsume {
		out.PublishPerSec, out.PublishMs = &r.PublishPerSec, ms(r.PublishDuration)
	}
	switch r.Phase {
	case bench.PhaseConsume:
		out.ConsumePerSec, out.ConsumeMs = &r.ConsumePerSec, ms(r.ConsumeDuration)
	case bench.PhaseEndToEnd:
		out.EndToEndPerSec, out.EndToEndMs = &r.EndToEndPerSec, ms(r.EndToEndDuration)
		out.LatencyP50Ms, out.LatencyP90Ms, out.LatencyP99Ms, out.LatencyMaxMs = &r.Latency.P50, &r.Latency.P90, &r.Latency.P99, &r.Latency.Max
	}
	if r.CPUPerMessage > 0 {
		out.CPUMicrosPerMsg = micros(r.CPUPerMessage)
	}
	if r.ServerCPUKnown {
		out.ServerCPUPerMsgUs = micros(r.ServerCPUPerMessage)
	}
	return out
}

// micros is d in microseconds, to a hundredth.
func micros(d time.Duration) *float64 {
	us := math.Round(float64(d)/float64(time.Microsecond)*100) / 100
	return &us
}

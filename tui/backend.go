package tui

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/restproxy"
	"github.com/spectacles-go/spectacles/internal/redact"
)

// Backend is everything the console needs from the node it runs on. Every
// method must be safe for concurrent use: the console calls them from
// commands, off the UI goroutine.
type Backend interface {
	// Node describes the node and the broker; it does not change.
	Node() NodeInfo
	// Inspector looks inside the broker; nil when the broker offers no
	// inspection (the stream views then say so). When it is also a
	// core.PendingInspector the Pending view lists pending messages and
	// can ack, claim and dead-letter them; otherwise it explains why not.
	Inspector() core.Inspector
	// Broker publishes and calls; nil when the console cannot publish.
	Broker() core.Broker
	// Gateway describes the local gateway, if one runs or failed.
	Gateway() GatewayInfo
	// StartGateway starts a local gateway with token, or with the token of
	// the environment when token is empty. It returns once the shards are
	// starting, or with an error that never contains the token.
	StartGateway(ctx context.Context, token string) error
	// GatewayNodes returns the statuses that gateway nodes in other
	// processes publish (redisgw.ReadNodeStatuses), sorted by group and
	// client; nil, nil when the node has no source of them (NodeInfo's
	// GatewayNodes is false).
	GatewayNodes(ctx context.Context) ([]gateway.NodeStatus, error)
	// Redact removes every secret (token, broker passwords) from text
	// before the console shows it.
	Redact(text string) string
}

// NodeInfo describes the node the console runs on.
type NodeInfo struct {
	// Name identifies this node (host and process).
	Name string
	// Client is the consumer name the console claims messages to by
	// default; Group is the configured group, if any.
	Client, Group string
	// BrokerKind ("redis") and BrokerAddress (without any password).
	BrokerKind, BrokerAddress string
	// Embedded reports an in-process broker that keeps nothing.
	Embedded bool
	// Simulated reports a node whose Discord side is the built-in
	// simulator with synthetic traffic.
	Simulated bool
	// EnvToken reports that DISCORD_TOKEN is set, so that a gateway can be
	// started without typing a token.
	EnvToken bool
	// CanStartGateway reports that StartGateway may work.
	CanStartGateway bool
	// GatewayNodes reports a source of the statuses that gateway nodes in
	// other processes publish (a Redis they report to).
	GatewayNodes bool
	// StaleAfter is the idle time after which a consumer is shown as
	// stale: the broker's message timeout.
	StaleAfter time.Duration
}

// Gateway is the part of a gateway manager the console drives; a
// *gateway.Manager satisfies it.
type Gateway interface {
	// Shards returns the status of every shard the gateway started.
	Shards() []gateway.Status
	// ShardCount is the bot's total shard count (0 before it is known).
	ShardCount() int
	// StartShard starts (or restarts) a shard.
	StartShard(id int) error
	// StopShard stops a shard, keeping its session resumable.
	StopShard(id int) error
	// ReconnectShard makes a shard reconnect and resume.
	ReconnectShard(id int) error
}

var _ Gateway = (*gateway.Manager)(nil)

// publishCounter is what a gateway may add: its publish counters (a
// *gateway.Manager has them).
type publishCounter interface {
	Published() uint64
	QueueLength() int
}

// GatewayInfo is the state of the local gateway.
type GatewayInfo struct {
	// Gateway is the running gateway, nil when none runs.
	Gateway Gateway
	// Simulated reports a gateway connected to the built-in simulator.
	Simulated bool
	// Starting reports a gateway being started.
	Starting bool
	// Err is why the gateway stopped or failed to start.
	Err error
	// Target describes where the shards connect (API host), never the token.
	Target string
}

// Node is a Backend assembled from parts; the command and the tests build
// one. Its zero value has nothing: set the fields before use, then call
// SetGateway as gateways start and stop.
type Node struct {
	// Info describes the node.
	Info NodeInfo
	// Inspect is the broker's inspector, or nil.
	Inspect core.Inspector
	// Publisher publishes and calls, or nil.
	Publisher core.Broker
	// Start starts a gateway with a token ("" for the environment's); nil
	// when this node cannot start one. It returns once the shards start.
	Start func(ctx context.Context, token string) (GatewayInfo, error)
	// ReadNodes reads the statuses that gateway nodes publish (typically
	// redisgw.ReadNodeStatuses on the Redis they report to); nil when
	// there is no such source.
	ReadNodes func(ctx context.Context) ([]gateway.NodeStatus, error)
	// ReadBuckets reads the REST proxy's rate limits (typically the Redis
	// store that proxies share); nil when there is no such source.
	ReadBuckets func(ctx context.Context) (restproxy.Snapshot, error)
	// Secrets are strings that must never be shown (passwords, tokens).
	Secrets []string

	mu      sync.Mutex
	gw      GatewayInfo
	secrets []string // added by StartGateway
}

// errNoBuckets: the node has no source of REST proxy buckets.
var errNoBuckets = errors.New("no source of REST proxy buckets")

// Buckets reads the REST proxy's rate limits (Node.ReadBuckets), or fails
// with errNoBuckets.
func (n *Node) Buckets(ctx context.Context) (restproxy.Snapshot, error) {
	if n.ReadBuckets == nil {
		return restproxy.Snapshot{}, errNoBuckets
	}
	return n.ReadBuckets(ctx)
}

// Presence returns the broker's presence reader, nil when it reports
// none.
func (n *Node) Presence() core.PresenceReader {
	p, _ := n.Publisher.(core.PresenceReader)
	return p
}

// presencer is a backend that can list the service instances.
type presencer interface {
	Presence() core.PresenceReader
}

// bucketReader is a backend that can read the REST proxy's buckets.
type bucketReader interface {
	Buckets(ctx context.Context) (restproxy.Snapshot, error)
}

// Node implements Backend.
func (n *Node) Node() NodeInfo {
	info := n.Info
	info.CanStartGateway = info.CanStartGateway || n.Start != nil
	info.GatewayNodes = info.GatewayNodes || n.ReadNodes != nil
	return info
}

// GatewayNodes implements Backend.
func (n *Node) GatewayNodes(ctx context.Context) ([]gateway.NodeStatus, error) {
	if n.ReadNodes == nil {
		return nil, nil
	}
	return n.ReadNodes(ctx)
}

// Inspector implements Backend.
func (n *Node) Inspector() core.Inspector { return n.Inspect }

// pendingInspector returns b's inspector as a core.PendingInspector, or
// nil when the broker cannot list and settle pending messages (RabbitMQ).
func pendingInspector(b Backend) core.PendingInspector {
	p, _ := b.Inspector().(core.PendingInspector)
	return p
}

// Broker implements Backend.
func (n *Node) Broker() core.Broker { return n.Publisher }

// Gateway implements Backend.
func (n *Node) Gateway() GatewayInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gw
}

// SetGateway records the gateway's state.
func (n *Node) SetGateway(g GatewayInfo) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gw = g
}

// ErrCannotStartGateway is returned by StartGateway on a node that cannot
// start one.
var ErrCannotStartGateway = errors.New("this node cannot start a gateway")

// StartGateway implements Backend.
func (n *Node) StartGateway(ctx context.Context, token string) error {
	if n.Start == nil {
		return ErrCannotStartGateway
	}
	n.mu.Lock()
	if n.gw.Gateway != nil {
		n.mu.Unlock()
		return errors.New("a gateway already runs on this node")
	}
	if n.gw.Starting {
		n.mu.Unlock()
		return errors.New("a gateway is already starting")
	}
	if token != "" {
		n.secrets = append(n.secrets, token)
	}
	n.gw = GatewayInfo{Starting: true}
	n.mu.Unlock()
	info, err := n.Start(ctx, token)
	n.mu.Lock()
	defer n.mu.Unlock()
	if err != nil {
		n.gw = GatewayInfo{Err: errors.New(n.redactLocked(err.Error()))}
		return n.gw.Err
	}
	n.gw = info
	return nil
}

// Redact implements Backend.
func (n *Node) Redact(text string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.redactLocked(text)
}

func (n *Node) redactLocked(text string) string {
	for _, list := range [][]string{n.Secrets, n.secrets} {
		for _, s := range list {
			if len(s) >= 3 {
				text = redact.Strings(text, s)
			}
		}
	}
	return text
}

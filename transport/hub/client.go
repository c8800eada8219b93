package hub

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/unhandled"
)

// DefaultURL is the hub a client dials without HUB_URL.
const DefaultURL = "ws://" + DefaultAddress

// ErrHandlerFailed is wrapped by the error of a Call whose handler answered
// with drs.exception or drs.error.
var ErrHandlerFailed = errors.New("the handler failed")

// ErrConnectionLost is wrapped by the errors of what was sent, or waited
// for, when the connection to the hub broke, and of what is sent while the
// client reconnects.
var ErrConnectionLost = errors.New("connection to the hub lost")

// ErrInvalidConfig is returned by Open for a configuration it cannot use.
var ErrInvalidConfig = errors.New("invalid hub configuration")

// Config configures a hub client.
type Config struct {
	core.Options
	// URL is the hub: ws://host:port[/path] (or wss://) or tcp://host:port.
	// Default DefaultURL.
	URL string
	// MaxMessageSize bounds one command read from the hub. Default
	// DefaultMaxMessageSize.
	MaxMessageSize int
}

// Broker is a core.Broker that talks to a hub. It is safe for concurrent
// use. Make one with Open.
type Broker struct {
	cfg Config
	log *slog.Logger

	fmu sync.RWMutex
	f   framer // nil while reconnecting

	session  string
	idPrefix string
	idSeq    atomic.Uint64
	keySeq   atomic.Uint64

	mu        sync.Mutex
	pending   map[string]*request
	consumers map[string]*consumer
	lostErr   error

	closeCtx    context.Context
	closeCancel context.CancelFunc
	closed      atomic.Bool
	handlers    sync.WaitGroup // consumers
	readerDone  chan struct{}
	closeOnce   sync.Once

	unhandled atomic.Uint64
	// byEvent counts them per event.
	byEvent unhandled.Tally
}

var (
	_ core.Broker           = (*Broker)(nil)
	_ core.PresenceReader   = (*Broker)(nil)
	_ core.UnhandledCounter = (*Broker)(nil)
)

// request is a command waiting for its answer.
type request struct {
	reply chan Command // cap 1
	// onReply runs on the reading goroutine before the next command is
	// read (a subscription registers its consumer there).
	onReply func(Command)
}

// Open connects to the hub at cfg.URL and registers the client.
func Open(ctx context.Context, cfg Config) (*Broker, error) {
	cfg.Options = cfg.Options.WithDefaults()
	if cfg.URL == "" {
		cfg.URL = DefaultURL
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	client := cfg.Identity.Client
	if client == "" {
		client = core.DefaultClient()
		cfg.Identity.Client = client
	}
	f, err := dial(ctx, cfg.URL, cfg.MaxMessageSize)
	if err != nil {
		return nil, err
	}
	var seed [6]byte
	_, _ = rand.Read(seed[:])
	b := &Broker{
		cfg:        cfg,
		log:        cfg.Logger.With("broker", "hub"),
		f:          f,
		idPrefix:   hex.EncodeToString(seed[:]) + "-",
		pending:    make(map[string]*request),
		consumers:  make(map[string]*consumer),
		readerDone: make(chan struct{}),
	}
	b.closeCtx, b.closeCancel = context.WithCancel(context.Background())
	go b.read()
	resp, err := b.request(ctx, ActionRegister, b.registration(), nil)
	if err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("hub: register at %s: %w", cfg.URL, err)
	}
	var r struct {
		Session string `json:"session"`
	}
	_ = json.Unmarshal(resp.Body, &r)
	b.mu.Lock()
	b.session = r.Session
	b.mu.Unlock()
	return b, nil
}

// dial connects to a ws://, wss:// or tcp:// URL.
func dial(ctx context.Context, raw string, max int) (framer, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: HUB_URL %q is not ws://host:port or tcp://host:port", ErrInvalidConfig, raw)
	}
	switch u.Scheme {
	case "ws", "wss":
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 16 << 10, WriteBufferSize: 16 << 10}
		c, resp, err := d.DialContext(ctx, raw, nil)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			return nil, fmt.Errorf("hub: connect to %s: %w", raw, err)
		}
		return newWSFramer(c, max), nil
	case "tcp":
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return nil, fmt.Errorf("hub: connect to %s: %w", raw, err)
		}
		return newTCPFramer(c, bufio.NewReaderSize(c, 64<<10), max), nil
	}
	return nil, fmt.Errorf("%w: HUB_URL %q: the scheme must be ws, wss or tcp", ErrInvalidConfig, raw)
}

// Session is the name the hub gave this connection.
func (b *Broker) Session() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.session
}

// Unhandled counts the messages this client published that no group
// consumes (the hub answered them with drs.error "unhandled").
func (b *Broker) Unhandled() uint64 { return b.unhandled.Load() }

// UnhandledCounts returns Unhandled per event.
func (b *Broker) UnhandledCounts() map[string]uint64 { return b.byEvent.Counts() }

func (b *Broker) newID() string {
	return b.idPrefix + strconv.FormatUint(b.idSeq.Add(1), 10)
}

func (b *Broker) newKey() string { return "k" + strconv.FormatUint(b.keySeq.Add(1), 36) }

func (b *Broker) conn() framer {
	b.fmu.RLock()
	defer b.fmu.RUnlock()
	return b.f
}

func (b *Broker) setConn(f framer) {
	b.fmu.Lock()
	b.f = f
	b.fmu.Unlock()
}

// write sends one command.
func (b *Broker) write(cmd *Command) error {
	if err := b.lost(); err != nil {
		return err
	}
	f := b.conn()
	if f == nil {
		return fmt.Errorf("%w: reconnecting", ErrConnectionLost)
	}
	if err := f.WriteFrames([][]byte{cmd.Encode()}); err != nil {
		return fmt.Errorf("%w: %w", ErrConnectionLost, err)
	}
	return nil
}

func (b *Broker) lost() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lostErr
}

// request sends a reserved command with a key and waits for its answer.
func (b *Broker) request(ctx context.Context, action string, body any, onReply func(Command)) (Command, error) {
	raw, err := marshalBody(body)
	if err != nil {
		return Command{}, err
	}
	key := b.newKey()
	req := &request{reply: make(chan Command, 1), onReply: onReply}
	if err := b.addPending(key, req); err != nil {
		return Command{}, err
	}
	defer b.removePending(key)
	if err := b.write(&Command{Action: action, Key: key, Body: raw}); err != nil {
		return Command{}, err
	}
	select {
	case r := <-req.reply:
		if r.Action != ActionResponse {
			return r, answerError(r)
		}
		return r, nil
	case <-ctx.Done():
		return Command{}, ctx.Err()
	case <-b.readerDone:
		return Command{}, b.lostOr()
	}
}

func (b *Broker) lostOr() error {
	if err := b.lost(); err != nil {
		return err
	}
	return core.ErrClosed
}

func (b *Broker) addPending(key string, r *request) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lostErr != nil {
		return b.lostErr
	}
	b.pending[key] = r
	return nil
}

func (b *Broker) removePending(key string) {
	b.mu.Lock()
	delete(b.pending, key)
	b.mu.Unlock()
}

// answerError turns drs.error or drs.exception into an error.
func answerError(c Command) error {
	var eb ErrorBody
	_ = json.Unmarshal(c.Body, &eb)
	if eb.Reason == "" {
		eb.Reason = "no reason given"
	}
	switch {
	case eb.Code == CodeUnhandled:
		return fmt.Errorf("%w: %s", core.ErrUnhandled, eb.Reason)
	case c.Action == ActionException:
		return fmt.Errorf("%w: %s", ErrHandlerFailed, eb.Reason)
	}
	return fmt.Errorf("hub: %s: %s", c.Action, eb.Reason)
}

// Publish fires data under event and returns its id once written. Values
// travel as JSON (the body); a core.Raw travels as it is when it is JSON,
// else in body_base64.
func (b *Broker) Publish(ctx context.Context, event string, data any) (string, error) {
	if b.closed.Load() {
		return "", core.ErrClosed
	}
	cmd, err := b.outgoing(event, data)
	if err != nil {
		return "", fmt.Errorf("hub: publish: %w", err)
	}
	if err := b.write(&cmd); err != nil {
		return "", fmt.Errorf("hub: publish %s: %w", event, err)
	}
	return cmd.ID, nil
}

func (b *Broker) outgoing(event string, data any) (Command, error) {
	if event == "" {
		return Command{}, errors.New("event name is empty")
	}
	if IsReserved(event) {
		return Command{}, fmt.Errorf("%q: actions starting with drs. are reserved", event)
	}
	raw, err := core.JSON{}.Marshal(data)
	if err != nil {
		return Command{}, err
	}
	cmd := Command{Action: event, ID: b.newID()}
	cmd.SetPayload(raw)
	return cmd, nil
}

// Call fires data under event with a key and waits for the drs.response
// with that key. A call no online instance handles fails at once with an
// error wrapping core.ErrUnhandled; one whose handler answered
// drs.exception wraps ErrHandlerFailed; no answer in time wraps
// core.ErrTimeout.
func (b *Broker) Call(ctx context.Context, event string, data any) (*core.Payload, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	cmd, err := b.outgoing(event, data)
	if err != nil {
		return nil, fmt.Errorf("hub: call: %w", err)
	}
	started := time.Now()
	ctx, cancel := b.cfg.CallContext(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return nil, core.TimeoutError(event, ctx, started)
	}
	cmd.Key = b.newKey()
	req := &request{reply: make(chan Command, 1)}
	if err := b.addPending(cmd.Key, req); err != nil {
		return nil, fmt.Errorf("hub: call %s: %w", event, err)
	}
	defer b.removePending(cmd.Key)
	if err := b.write(&cmd); err != nil {
		return nil, fmt.Errorf("hub: call %s: %w", event, err)
	}
	select {
	case r := <-req.reply:
		if r.Action != ActionResponse {
			return nil, fmt.Errorf("hub: call %s: %w", event, answerError(r))
		}
		return b.payload(&r), nil
	case <-ctx.Done():
		return nil, core.TimeoutError(event, ctx, started)
	case <-b.closeCtx.Done():
		return nil, fmt.Errorf("hub: call %s: %w", event, core.ErrClosed)
	case <-b.readerDone:
		return nil, fmt.Errorf("hub: call %s: %w", event, b.lostOr())
	}
}

// payload wraps a received command's payload with the codec that reads it.
func (b *Broker) payload(c *Command) *core.Payload {
	raw, isJSON := c.Payload()
	if isJSON {
		return core.NewPayload(raw, core.JSON{})
	}
	return core.NewPayload(raw, b.cfg.Codec)
}

// Instances asks the hub for the registered instances.
func (b *Broker) Instances(ctx context.Context) ([]core.Instance, error) {
	r, err := b.request(ctx, ActionPresence, map[string]any{}, nil)
	if err != nil {
		return nil, fmt.Errorf("hub: presence: %w", err)
	}
	var out []core.Instance
	if len(r.Body) == 0 {
		return out, nil
	}
	if err := json.Unmarshal(r.Body, &out); err != nil {
		return nil, fmt.Errorf("hub: presence: %w", err)
	}
	return out, nil
}

// PresenceHistory asks the hub for its latest presence events, newest
// first (the hub remembers 200).
func (b *Broker) PresenceHistory(ctx context.Context, n int) ([]core.PresenceEvent, error) {
	r, err := b.request(ctx, ActionHistory, map[string]int{"count": n}, nil)
	if err != nil {
		return nil, fmt.Errorf("hub: presence history: %w", err)
	}
	out := []core.PresenceEvent{}
	if len(r.Body) > 0 {
		if err := json.Unmarshal(r.Body, &out); err != nil {
			return nil, fmt.Errorf("hub: presence history: %w", err)
		}
	}
	return out, nil
}

var _ core.PresenceHistory = (*Broker)(nil)

// UnhandledReports reports the events that the hub's connected clients
// fired and that no group consumes (the hub counts them per connection,
// drs.unhandled); a client that has disconnected is no longer counted.
func (b *Broker) UnhandledReports(ctx context.Context) ([]core.UnhandledReport, error) {
	r, err := b.request(ctx, ActionUnhandled, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("hub: unhandled: %w", err)
	}
	var ins []core.Instance
	if len(r.Body) > 0 {
		if err := json.Unmarshal(r.Body, &ins); err != nil {
			return nil, fmt.Errorf("hub: unhandled: %w", err)
		}
	}
	return core.MergeUnhandled(nil, ins), nil
}

var _ core.UnhandledReader = (*Broker)(nil)

// read handles what the hub sends; when the connection breaks it
// reconnects (see reconnect), until Close.
func (b *Broker) read() {
	defer close(b.readerDone)
	for {
		err := b.readFrom(b.conn())
		if !b.closed.Load() {
			b.log.Warn("connection to the hub lost; reconnecting", "url", b.cfg.URL, "err", err)
			b.setConn(nil)
			b.failPending(err)
			if b.reconnect() {
				continue
			}
		}
		b.mu.Lock()
		b.lostErr = core.ErrClosed
		consumers := b.consumersLocked()
		b.mu.Unlock()
		for _, c := range consumers {
			c.cancel()
		}
		return
	}
}

// readFrom handles what f sends until it fails.
func (b *Broker) readFrom(f framer) error {
	for {
		frame, err := f.ReadFrame()
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				b.log.Warn("dropped a command from the hub", "err", err)
				continue
			}
			return err
		}
		cmd, err := DecodeCommand(frame, b.cfg.MaxMessageSize)
		if err != nil {
			b.log.Warn("dropped a command from the hub", "err", err)
			continue
		}
		b.dispatch(&cmd)
	}
}

// consumersLocked lists the running consumers; the caller holds b.mu.
func (b *Broker) consumersLocked() []*consumer {
	out := make([]*consumer, 0, len(b.consumers))
	for _, c := range b.consumers {
		out = append(out, c)
	}
	return out
}

// registration is what the client registers as.
func (b *Broker) registration() Registration {
	id := b.cfg.Identity
	return Registration{Group: id.Group, Client: id.Client, Version: b.cfg.Announce.Version, Calls: b.cfg.Announce.Calls}
}

// failPending answers every waiting request with drs.error: the
// connection broke, so no answer will come.
func (b *Broker) failPending(cause error) {
	b.mu.Lock()
	pending := b.pending
	b.pending = make(map[string]*request)
	b.mu.Unlock()
	body := bodyOf(ErrorBody{Reason: fmt.Sprintf("%v: %v", ErrConnectionLost, cause), Code: "connection_lost"})
	for key, req := range pending {
		req.reply <- Command{Action: ActionError, Key: key, Body: body}
	}
}

// reconnect dials the hub again (backing off up to 5 s) until it answers,
// registers and subscribes every running consumer again, and reports
// false when Close came first. Deliveries that were in flight went back
// to the hub (or were lost with it, if it restarted): their acks fail.
func (b *Broker) reconnect() bool {
	delay := 100 * time.Millisecond
	for {
		select {
		case <-b.closeCtx.Done():
			return false
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
		f, err := dial(b.closeCtx, b.cfg.URL, b.cfg.MaxMessageSize)
		if err != nil {
			b.log.Debug("reconnecting to the hub", "err", err)
			continue
		}
		if err := b.handshake(f); err != nil {
			_ = f.Close()
			b.log.Debug("reconnecting to the hub", "err", err)
			continue
		}
		b.setConn(f)
		b.log.Info("reconnected to the hub", "url", b.cfg.URL, "session", b.session)
		return true
	}
}

// handshake registers on f and subscribes the consumers again, handling
// what arrives meanwhile.
func (b *Broker) handshake(f framer) error {
	ask := func(action string, body any) (Command, error) {
		key := b.newKey()
		cmd := Command{Action: action, Key: key, Body: bodyOf(body)}
		if err := f.WriteFrames([][]byte{cmd.Encode()}); err != nil {
			return Command{}, err
		}
		for {
			frame, err := f.ReadFrame()
			if err != nil {
				return Command{}, err
			}
			r, err := DecodeCommand(frame, b.cfg.MaxMessageSize)
			if err != nil {
				continue
			}
			if r.Key == key && IsReserved(r.Action) {
				if r.Action != ActionResponse {
					return r, answerError(r)
				}
				return r, nil
			}
			b.dispatch(&r)
		}
	}
	r, err := ask(ActionRegister, b.registration())
	if err != nil {
		return err
	}
	var reg struct {
		Session string `json:"session"`
	}
	_ = json.Unmarshal(r.Body, &reg)
	b.mu.Lock()
	b.session = reg.Session
	consumers := b.consumersLocked()
	b.mu.Unlock()
	for _, c := range consumers {
		r, err := ask(ActionSubscribe, c.subscription)
		if err != nil {
			return err
		}
		b.mu.Lock()
		delete(b.consumers, c.sub)
		c.sub = subID(r)
		b.consumers[c.sub] = c
		b.mu.Unlock()
	}
	return nil
}

func (b *Broker) dispatch(cmd *Command) {
	switch cmd.Action {
	case ActionResponse, ActionError, ActionException:
		b.mu.Lock()
		req := b.pending[cmd.Key]
		if req != nil {
			delete(b.pending, cmd.Key)
		}
		b.mu.Unlock()
		if req != nil {
			if req.onReply != nil {
				req.onReply(*cmd)
			}
			req.reply <- *cmd
			return
		}
		if cmd.Action == ActionError {
			b.noteError(cmd)
		}
		return
	}
	if IsReserved(cmd.Action) {
		return
	}
	b.mu.Lock()
	var c *consumer
	if cmd.Sub != "" {
		c = b.consumers[cmd.Sub]
	} else { // a broadcast: to a consumer of its action, if any
		for _, o := range b.consumers {
			if slices.Contains(o.events, cmd.Action) {
				c = o
				break
			}
		}
	}
	b.mu.Unlock()
	if c == nil {
		return // a consumer that stopped: the hub gives it again after its timeout
	}
	raw, isJSON := cmd.Payload()
	codec := core.Codec(core.JSON{})
	if !isJSON {
		codec = b.cfg.Codec
	}
	var st core.Settler = broadcastSettler{}
	deliveries := cmd.Deliveries
	if cmd.Key != "" {
		st = &settler{b: b, tag: cmd.Key}
	} else if deliveries == 0 {
		deliveries = 1
	}
	m := core.NewMessage(cmd.Action, cmd.ID, raw, deliveries, codec, st)
	m.Headers = cmd.Headers
	select {
	case c.queue <- m:
	default:
		b.log.Warn("consumer queue full: a delivery is left for the hub to give again after its timeout",
			"event", cmd.Action, "id", cmd.ID)
	}
}

// noteError logs a drs.error that answers no request: a fire nobody
// consumes, or an ack the hub no longer expected.
func (b *Broker) noteError(cmd *Command) {
	var eb ErrorBody
	_ = json.Unmarshal(cmd.Body, &eb)
	switch eb.Code {
	case CodeUnhandled:
		if core.CountsAsUnhandled(eb.Action) {
			b.byEvent.Add(eb.Action, 1)
		}
		if b.unhandled.Add(1) == 1 {
			b.log.Info("published an event no group consumes (counted in Unhandled; logged once)", "event", eb.Action)
		}
	default:
		b.log.Warn("the hub refused a command", "action", eb.Action, "code", eb.Code, "reason", eb.Reason)
	}
}

// Close stops every consumer, waits for their handlers (whose Acks and
// Replies still go out), and closes the connection. Messages delivered but
// not acknowledged go back to the hub, which gives them to another
// instance of the group. It is idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.closeCancel()
		b.handlers.Wait()
		if f := b.conn(); f != nil {
			_ = b.write(&Command{Action: ActionBye})
			_ = f.Close()
		}
		<-b.readerDone
	})
	return nil
}

// String describes the broker for logs.
func (b *Broker) String() string {
	return "hub " + strings.TrimSuffix(b.cfg.URL, "/")
}

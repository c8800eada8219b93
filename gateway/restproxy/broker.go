package restproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// Reply statuses of the Spectacles proxy protocol (spec-tacles/proxy).
const (
	StatusSuccess              = 0
	StatusUnknown              = 1
	StatusInvalidRequestFormat = 2
	StatusInvalidPath          = 3
	StatusInvalidQuery         = 4
	StatusInvalidMethod        = 5
	StatusInvalidHeaders       = 6
	StatusRequestFailure       = 7
	StatusRequestTimeout       = 8
)

// Reply is the answer to a REQUEST: Body is a *ReplyBody on success, else
// the error text.
type Reply struct {
	Status int `msgpack:"status" json:"status"`
	Body   any `msgpack:"body" json:"body"`
}

// ReplyBody is Discord's answer inside a successful Reply.
type ReplyBody struct {
	Status int `msgpack:"status" json:"status"`
	// Headers have lower-case names and one string value each (repeated
	// headers joined with ", ").
	Headers map[string]string `msgpack:"headers" json:"headers"`
	URL     string            `msgpack:"url" json:"url"`
	Body    []byte            `msgpack:"body" json:"body"`
}

// BrokerConfig configures a BrokerServer.
type BrokerConfig struct {
	// Timeout bounds a request that carries no timeout, from its receipt.
	// Default 15 s.
	Timeout time.Duration
	// Logger receives diagnostics (never a token, a header or a body).
	Logger *slog.Logger
}

// BrokerServer answers Spectacles REQUEST messages with a Proxy. Its
// Handle runs once per message on the broker's handler pool, so the
// broker's Options.Concurrency bounds the requests held at once, and the
// broker's Close waits for them to be answered.
//
// Ack policy (at most once): a message is acknowledged when it is
// received, before it waits on any rate limit and before it is sent, and
// only then is it sent. A request waiting on a limit is therefore never
// delivered again to another proxy after the broker's MessageTimeout and
// sent to Discord twice. The price: a proxy that dies while it holds a
// request loses it (its caller times out). A message whose
// acknowledgement fails is not sent (the broker delivers it again). Every
// acknowledged request gets a reply: Discord's answer (status 0, whatever
// the HTTP status), or status 2 to 8. A Redis message published more than
// its timeout + 30 s before it was received (a backlog) is answered status
// 8 without being sent.
type BrokerServer struct {
	p   *Proxy
	cfg BrokerConfig
	log *slog.Logger
}

// NewBrokerServer returns a BrokerServer that forwards with p.
func NewBrokerServer(p *Proxy, cfg BrokerConfig) *BrokerServer {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &BrokerServer{p: p, cfg: cfg, log: cfg.Logger}
}

// staleSlack is how far past its timeout a Redis message may have been
// published (by its stream id's time, the Redis server's clock) and still
// be sent: it tolerates clock differences between Redis and the proxy,
// while a backlog left by a proxy outage is answered status 8 unsent.
const staleSlack = 30 * time.Second

// publishedAt reads the publish time of a Redis stream id (MS-SEQ).
func publishedAt(id string) (time.Time, bool) {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok || ms == "" || seq == "" {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(n), true
}

// replyTimeout bounds publishing one reply.
const replyTimeout = 5 * time.Second

// Handle is the core.Handler of REQUEST messages: it acknowledges the
// message, forwards the request within its timeout and replies.
func (s *BrokerServer) Handle(ctx context.Context, m *core.Message) {
	received := time.Now()
	log := s.log.With("id", m.ID)
	req, timeout, status, err := DecodeRequest(m)
	if err := m.Ack(ctx); err != nil {
		log.Warn("acknowledgement failed: the request is not sent (the broker delivers it again)", "err", err)
		return
	}
	if err != nil {
		s.reply(ctx, m, log, Reply{Status: status, Body: err.Error()})
		return
	}
	if timeout <= 0 {
		timeout = s.cfg.Timeout
	}
	if at, ok := publishedAt(m.ID); ok && received.Sub(at) > timeout+staleSlack {
		s.reply(ctx, m, log, Reply{Status: StatusRequestTimeout,
			Body: "the request was published " + received.Sub(at).Round(time.Second).String() + " ago, past its timeout; it was not sent"})
		return
	}
	rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), received.Add(timeout))
	defer cancel()
	res, err := s.p.Do(rctx, req)
	s.reply(ctx, m, log, ReplyOf(res, err))
}

// reply publishes a reply, even while the proxy stops.
func (s *BrokerServer) reply(ctx context.Context, m *core.Message, log *slog.Logger, r Reply) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), replyTimeout)
	defer cancel()
	if err := m.Reply(rctx, r); err != nil {
		log.Warn("reply failed", "status", r.Status, "err", err)
		return
	}
	log.Debug("replied", "status", r.Status)
}

// ReplyOf turns Proxy.Do's result into a Reply.
func ReplyOf(res *Response, err error) Reply {
	if err == nil {
		h := make(map[string]string, len(res.Header))
		for k, vs := range res.Header {
			h[strings.ToLower(k)] = strings.Join(vs, ", ")
		}
		return Reply{Status: StatusSuccess, Body: &ReplyBody{Status: res.Status, Headers: h, URL: res.URL, Body: res.Body}}
	}
	status := StatusUnknown
	switch {
	case errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded):
		status = StatusRequestTimeout
	case errors.Is(err, ErrInvalidMethod):
		status = StatusInvalidMethod
	case errors.Is(err, ErrInvalidPath):
		status = StatusInvalidPath
	case errors.Is(err, ErrInvalidQuery):
		status = StatusInvalidQuery
	case errors.Is(err, ErrInvalidHeaders):
		status = StatusInvalidHeaders
	case errors.Is(err, ErrInvalidRequest):
		status = StatusInvalidRequestFormat
	case errors.Is(err, ErrUpstream), errors.Is(err, ErrInvalidBudget), errors.Is(err, ErrBanned):
		status = StatusRequestFailure
	}
	return Reply{Status: status, Body: err.Error()}
}

// DecodeRequest reads a REQUEST payload leniently, as spec-tacles/proxy's
// peers write it: method and path strings (a path without its leading "/"
// gets one); query nil, a map of strings (numbers and booleans are
// written out; keys sorted; values appended as given, not
// percent-encoded) or a string; body nil, a str (JSON text), a bin, an
// array of bytes, or any other value (sent as JSON); headers a map of
// strings; timeout nil, {secs, nanos}, [secs, nanos], or a number of
// milliseconds. It returns the reply status of a failure.
func DecodeRequest(m *core.Message) (*Request, time.Duration, int, error) {
	data, err := m.Data()
	if err != nil {
		return nil, 0, StatusInvalidRequestFormat, fmt.Errorf("the request cannot be decoded: %w", err)
	}
	obj, ok := data.(map[string]any)
	if !ok {
		return nil, 0, StatusInvalidRequestFormat, fmt.Errorf("the request is a %s, not a map", kind(data))
	}
	req := &Request{Header: http.Header{}}
	method, ok := obj["method"].(string)
	if !ok || method == "" {
		return nil, 0, StatusInvalidMethod, errors.New("method must be a non-empty string")
	}
	req.Method = strings.ToUpper(method)
	path, ok := obj["path"].(string)
	if !ok {
		return nil, 0, StatusInvalidPath, errors.New("path must be a string")
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req.Path = path
	switch q := obj["query"].(type) {
	case nil:
	case string:
		req.RawQuery = strings.TrimPrefix(q, "?")
	case map[string]any:
		keys := make([]string, 0, len(q))
		for k := range q {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			v, ok := scalar(q[k])
			if !ok {
				return nil, 0, StatusInvalidQuery, fmt.Errorf("query value of %q is a %s, not a string", k, kind(q[k]))
			}
			parts = append(parts, k+"="+v)
		}
		req.RawQuery = strings.Join(parts, "&")
	default:
		return nil, 0, StatusInvalidQuery, fmt.Errorf("query is a %s, not a map", kind(q))
	}
	switch h := obj["headers"].(type) {
	case nil:
	case map[string]any:
		for k, v := range h {
			s, ok := scalar(v)
			if !ok {
				return nil, 0, StatusInvalidHeaders, fmt.Errorf("header %q is a %s, not a string", k, kind(v))
			}
			req.Header.Add(k, s)
		}
	default:
		return nil, 0, StatusInvalidHeaders, fmt.Errorf("headers is a %s, not a map", kind(h))
	}
	switch b := obj["body"].(type) {
	case nil:
	case string:
		req.Body = []byte(b)
	case []byte:
		req.Body = b
	case []any:
		body, ok := byteArray(b)
		if !ok {
			j, err := json.Marshal(core.JSONValue(b))
			if err != nil {
				return nil, 0, StatusInvalidRequestFormat, fmt.Errorf("body: %w", err)
			}
			body = j
		}
		req.Body = body
	default:
		j, err := json.Marshal(core.JSONValue(b))
		if err != nil {
			return nil, 0, StatusInvalidRequestFormat, fmt.Errorf("body: %w", err)
		}
		req.Body = j
	}
	timeout, err := decodeTimeout(obj["timeout"])
	if err != nil {
		return nil, 0, StatusInvalidRequestFormat, err
	}
	return req, timeout, StatusSuccess, nil
}

// decodeTimeout reads a serde Duration ({secs, nanos} or [secs, nanos]),
// a number of milliseconds, or nil.
func decodeTimeout(v any) (time.Duration, error) {
	var secs, nanos float64
	switch t := v.(type) {
	case nil:
		return 0, nil
	case map[string]any:
		s, ok1 := number(t["secs"])
		n, ok2 := number(t["nanos"])
		if !ok1 || (!ok2 && t["nanos"] != nil) {
			return 0, errors.New("timeout must be {secs, nanos} numbers")
		}
		secs, nanos = s, n
	case []any:
		if len(t) != 2 {
			return 0, errors.New("timeout must be [secs, nanos]")
		}
		s, ok1 := number(t[0])
		n, ok2 := number(t[1])
		if !ok1 || !ok2 {
			return 0, errors.New("timeout must be [secs, nanos] numbers")
		}
		secs, nanos = s, n
	default:
		msv, ok := number(v)
		if !ok {
			return 0, fmt.Errorf("timeout is a %s", kind(v))
		}
		secs = msv / 1000
	}
	d := secs*float64(time.Second) + nanos
	if d < 0 || d > float64(24*time.Hour) || math.IsNaN(d) {
		return 0, errors.New("timeout must be between 0 and 24 h")
	}
	return time.Duration(d), nil
}

// number reads an integer or float.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// scalar writes a string, number or boolean as text.
func scalar(v any) (string, bool) {
	switch s := v.(type) {
	case string:
		return s, true
	case []byte:
		return string(s), true
	case bool:
		return strconv.FormatBool(s), true
	case int64:
		return strconv.FormatInt(s, 10), true
	case uint64:
		return strconv.FormatUint(s, 10), true
	case float64:
		return strconv.FormatFloat(s, 'f', -1, 64), true
	case json.Number:
		return s.String(), true
	}
	return "", false
}

// byteArray reads an array of integers 0..255 (a Rust Vec<u8>).
func byteArray(a []any) ([]byte, bool) {
	out := make([]byte, len(a))
	for i, v := range a {
		n, ok := number(v)
		if !ok || n < 0 || n > 255 || n != math.Trunc(n) {
			return nil, false
		}
		out[i] = byte(n)
	}
	return out, true
}

// kind names a decoded value's type for errors.
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case string:
		return "string"
	case []byte:
		return "byte string"
	case map[string]any:
		return "map"
	case []any:
		return "array"
	case bool:
		return "boolean"
	}
	return "number"
}

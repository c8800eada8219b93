package amqp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spectacles-go/spectacles/internal/redact"
)

// The RabbitMQ management API (the rabbitmq_management plugin), as the
// Inspector uses it: a few bounded GETs and the queue "get" action.

const (
	// mgmtTimeout bounds a management request whose context has no
	// deadline.
	mgmtTimeout = 10 * time.Second
	// mgmtRetry is how long the API is left alone after it failed (no
	// answer, refused login, server error): meanwhile the Inspector
	// answers from AMQP alone at once instead of waiting for it again.
	mgmtRetry = 10 * time.Second
	// mgmtMaxBody bounds one response of the API.
	mgmtMaxBody = 32 << 20
	// mgmtMaxLookups bounds the channel and connection look-ups of one
	// Consumers call.
	mgmtMaxLookups = 32
	// mgmtRegexChunk bounds the length of one queue-name filter, so that
	// the request line stays well within the server's limit.
	mgmtRegexChunk = 2000
)

// errMgmtNotFound is returned for a 404: the queue (or exchange) is
// missing.
var errMgmtNotFound = errors.New("not found")

// mgmt is a client of the management API.
type mgmt struct {
	base      string // scheme://host:port[/prefix], no user info, no trailing slash
	shown     string // base as messages show it
	user      string
	pass      string
	vhost     string
	client    *http.Client
	transport *http.Transport
	log       *slog.Logger

	mu        sync.Mutex
	downUntil time.Time
	downErr   error
}

// newMgmt returns the client of cfg.ManagementURL, or nil when it is off.
// cfg went through withDefaults.
func newMgmt(cfg *Config, log *slog.Logger) (*mgmt, error) {
	if cfg.ManagementURL == ManagementOff || cfg.ManagementURL == "" {
		return nil, nil
	}
	amqpURI, err := parseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.ManagementURL)
	if err != nil {
		return nil, fmt.Errorf("%w: ManagementURL %q", ErrInvalidConfig, redact.URL(cfg.ManagementURL))
	}
	m := &mgmt{user: amqpURI.Username, pass: amqpURI.Password, vhost: amqpURI.Vhost, log: log}
	if u.User != nil {
		m.user = u.User.Username()
		m.pass, _ = u.User.Password()
	}
	u.User = nil
	u.RawQuery, u.Fragment = "", ""
	m.base = strings.TrimRight(u.String(), "/")
	m.shown = m.base
	dialer := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	m.transport = &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   cfg.ConnectTimeout,
		ResponseHeaderTimeout: mgmtTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
	}
	if cfg.TLS != nil {
		m.transport.TLSClientConfig = cfg.TLS.Clone()
	}
	m.client = &http.Client{
		Transport: m.transport,
		// The API does not redirect; following one could send the
		// credentials elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return m, nil
}

// close drops the idle connections to the API.
func (m *mgmt) close() {
	if m != nil {
		m.transport.CloseIdleConnections()
	}
}

// unavailable says why the API cannot be used now, or nil.
func (m *mgmt) unavailable() error {
	if m == nil {
		return errors.New("the management API is disabled (ManagementURL is \"off\")")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.downErr != nil && time.Now().Before(m.downUntil) {
		return m.downErr
	}
	return nil
}

// lastErr is why the latest request to the API failed, or nil when it
// answered (or was never asked).
func (m *mgmt) lastErr() error {
	if m == nil {
		return errors.New("the management API is disabled (ManagementURL is \"off\")")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.downErr
}

// markDown records that the API failed; it is left alone for mgmtRetry.
func (m *mgmt) markDown(err error) {
	m.mu.Lock()
	wasUp := m.downErr == nil
	m.downErr, m.downUntil = err, time.Now().Add(mgmtRetry)
	m.mu.Unlock()
	if wasUp {
		m.log.Warn("RabbitMQ management API unavailable; inspecting with AMQP alone", "err", err, "retry_in", mgmtRetry)
	}
}

func (m *mgmt) markUp() {
	m.mu.Lock()
	wasDown := m.downErr != nil
	m.downErr = nil
	m.mu.Unlock()
	if wasDown {
		m.log.Info("RabbitMQ management API available again", "url", m.shown)
	}
}

// mgmtError is a failure of the API itself (as opposed to a missing queue
// or a refused request): the Inspector falls back to AMQP.
type mgmtError struct{ err error }

func (e *mgmtError) Error() string { return e.err.Error() }
func (e *mgmtError) Unwrap() error { return e.err }

func isMgmtDown(err error) bool {
	var me *mgmtError
	return errors.As(err, &me)
}

// path builds an API path from segments, each escaped.
func (m *mgmt) path(segments ...string) string {
	var b strings.Builder
	b.WriteString("/api")
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// do sends one request and decodes the JSON answer into out. A 404 is
// errMgmtNotFound. A failure of the API (no answer, refused login, a
// server error) is a *mgmtError and marks the API down; so is calling it
// while it is down.
func (m *mgmt) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	if err := m.unavailable(); err != nil {
		return &mgmtError{err}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, mgmtTimeout)
		defer cancel()
	}
	target := m.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return fmt.Errorf("management API %s: %w", m.shown, err)
	}
	req.SetBasicAuth(m.user, m.pass)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := m.client.Do(req)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return fmt.Errorf("management API %s: %w", m.shown, context.Cause(ctx)) // the caller gave up
		}
		err = fmt.Errorf("management API at %s does not answer: %w", m.shown, errors.Unwrap(err))
		m.markDown(err)
		return &mgmtError{err}
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, mgmtMaxBody+1))
	if err != nil {
		err = fmt.Errorf("management API %s: reading the answer: %w", m.shown, err)
		m.markDown(err)
		return &mgmtError{err}
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		m.markUp()
		return errMgmtNotFound
	case resp.StatusCode == http.StatusUnauthorized:
		err := fmt.Errorf("management API %s refused the login of user %q (401)", m.shown, m.user)
		m.markDown(err)
		return &mgmtError{err}
	case resp.StatusCode == http.StatusForbidden:
		err := fmt.Errorf("management API %s: user %q may not do this (403): %s", m.shown, m.user, apiReason(raw))
		m.markDown(err)
		return &mgmtError{err}
	case resp.StatusCode >= 500:
		err := fmt.Errorf("management API %s: %s: %s", m.shown, resp.Status, apiReason(raw))
		m.markDown(err)
		return &mgmtError{err}
	case resp.StatusCode >= 300:
		m.markUp()
		return fmt.Errorf("management API %s %s: %s: %s", method, path, resp.Status, apiReason(raw))
	}
	m.markUp()
	if len(raw) > mgmtMaxBody {
		return fmt.Errorf("management API %s %s: the answer is larger than %d MiB", method, path, mgmtMaxBody>>20)
	}
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("management API %s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// apiReason extracts the "reason" of an API error answer.
func apiReason(raw []byte) string {
	var e struct {
		Error  string `json:"error"`
		Reason string `json:"reason"`
	}
	if json.Unmarshal(raw, &e) == nil && (e.Reason != "" || e.Error != "") {
		if e.Reason != "" {
			return e.Reason
		}
		return e.Error
	}
	s := strings.TrimSpace(string(raw))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// mgmtBinding is one binding whose source is the exchange.
type mgmtBinding struct {
	Destination     string `json:"destination"`
	DestinationType string `json:"destination_type"`
	RoutingKey      string `json:"routing_key"`
}

// bindings returns the queue bindings of exchange.
func (m *mgmt) bindings(ctx context.Context, exchange string) ([]mgmtBinding, error) {
	var all []mgmtBinding
	err := m.do(ctx, http.MethodGet, m.path("exchanges", m.vhost, exchange, "bindings", "source"), nil, nil, &all)
	if errors.Is(err, errMgmtNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, bd := range all {
		if bd.DestinationType == "queue" {
			out = append(out, bd)
		}
	}
	return out, nil
}

// bound reports whether queue is bound to exchange with routing key key.
func (m *mgmt) bound(ctx context.Context, exchange, queue, key string) (bool, error) {
	var list []mgmtBinding
	err := m.do(ctx, http.MethodGet, m.path("bindings", m.vhost, "e", exchange, "q", queue), nil, nil, &list)
	if errors.Is(err, errMgmtNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(list, func(bd mgmtBinding) bool { return bd.RoutingKey == key }), nil
}

// mgmtQueue is a queue's statistics; a nil count is one the server has
// not reported yet (it emits statistics every few seconds, 5 s by
// default, and a queue just declared has none).
type mgmtQueue struct {
	Name           string `json:"name"`
	Messages       *int64 `json:"messages"`
	Ready          *int64 `json:"messages_ready"`
	Unacknowledged *int64 `json:"messages_unacknowledged"`
	Consumers      *int64 `json:"consumers"`
}

const queueColumns = "name,messages,messages_ready,messages_unacknowledged,consumers"

// queues returns the statistics of the named queues that exist, by name:
// one request per chunk of names, filtered by an exact regular
// expression, never the vhost's whole list.
func (m *mgmt) queues(ctx context.Context, names []string) (map[string]mgmtQueue, error) {
	out := make(map[string]mgmtQueue, len(names))
	for len(names) > 0 {
		var (
			re strings.Builder
			n  int
		)
		re.WriteString("^(")
		for n < len(names) && n < 500 && (n == 0 || re.Len() < mgmtRegexChunk) {
			if n > 0 {
				re.WriteByte('|')
			}
			re.WriteString(quoteRegex(names[n]))
			n++
		}
		re.WriteString(")$")
		q := url.Values{
			"name":      {re.String()},
			"use_regex": {"true"},
			"page":      {"1"},
			"page_size": {"500"},
			"columns":   {queueColumns},
		}
		var page struct {
			Items []mgmtQueue `json:"items"`
		}
		if err := m.do(ctx, http.MethodGet, m.path("queues", m.vhost), q, nil, &page); err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			out[it.Name] = it
		}
		names = names[n:]
	}
	return out, nil
}

// quoteRegex quotes s for a PCRE (Erlang re) pattern.
func quoteRegex(s string) string {
	return `\Q` + strings.ReplaceAll(s, `\E`, `\E\\E\Q`) + `\E`
}

// mgmtConsumer is one entry of a queue's consumer_details.
type mgmtConsumer struct {
	Tag            string `json:"consumer_tag"`
	PrefetchCount  int    `json:"prefetch_count"`
	AckRequired    bool   `json:"ack_required"`
	ChannelDetails struct {
		Name           string `json:"name"`
		ConnectionName string `json:"connection_name"`
	} `json:"channel_details"`
}

// consumers returns the consumers of queue; errMgmtNotFound when it does
// not exist.
func (m *mgmt) consumers(ctx context.Context, queue string) ([]mgmtConsumer, error) {
	var q struct {
		ConsumerDetails []mgmtConsumer `json:"consumer_details"`
	}
	err := m.do(ctx, http.MethodGet, m.path("queues", m.vhost, queue), url.Values{"columns": {"name,consumer_details"}}, nil, &q)
	return q.ConsumerDetails, err
}

// mgmtChannel is what Consumers reads of a channel.
type mgmtChannel struct {
	ConsumerCount  *int64 `json:"consumer_count"`
	Unacknowledged *int64 `json:"messages_unacknowledged"`
}

func (m *mgmt) channel(ctx context.Context, name string) (mgmtChannel, error) {
	var c mgmtChannel
	err := m.do(ctx, http.MethodGet, m.path("channels", name), url.Values{"columns": {"consumer_count,messages_unacknowledged"}}, nil, &c)
	return c, err
}

func (m *mgmt) connectionName(ctx context.Context, name string) (string, error) {
	var c struct {
		UserProvidedName string `json:"user_provided_name"`
	}
	err := m.do(ctx, http.MethodGet, m.path("connections", name), url.Values{"columns": {"name,user_provided_name"}}, nil, &c)
	return c.UserProvidedName, err
}

// mgmtMessage is one message of the queue "get" action.
type mgmtMessage struct {
	PayloadBytes    int64  `json:"payload_bytes"`
	Payload         string `json:"payload"`
	PayloadEncoding string `json:"payload_encoding"`
	MessageCount    int64  `json:"message_count"` // messages left after this one
	Properties      struct {
		MessageID string                     `json:"message_id"`
		Headers   map[string]json.RawMessage `json:"headers"`
	} `json:"properties"`
}

// peek reads up to count messages from the head of queue and leaves them
// there (ackmode ack_requeue_true: RabbitMQ requeues them in place, marked
// redelivered). A missing queue has none.
func (m *mgmt) peek(ctx context.Context, queue string, count int) ([]mgmtMessage, error) {
	var out []mgmtMessage
	body := map[string]any{"count": count, "ackmode": "ack_requeue_true", "encoding": "base64"}
	err := m.do(ctx, http.MethodPost, m.path("queues", m.vhost, queue, "get"), nil, body, &out)
	if errors.Is(err, errMgmtNotFound) {
		return nil, nil
	}
	return out, err
}

// version returns the server's version from /api/overview.
func (m *mgmt) version(ctx context.Context) (string, error) {
	var o struct {
		Version string `json:"rabbitmq_version"`
	}
	err := m.do(ctx, http.MethodGet, "/api/overview", url.Values{"columns": {"rabbitmq_version"}}, nil, &o)
	return o.Version, err
}

// headerText formats one header value of the API's JSON: strings as they
// are, anything else as JSON.
func headerText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

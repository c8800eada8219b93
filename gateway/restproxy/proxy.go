package restproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Errors of Proxy.Do. None of them means the request reached Discord.
var (
	// ErrTimeout: the request's deadline would pass before a rate limit
	// allows it, or passed while it waited; it was not sent.
	ErrTimeout = errors.New("restproxy: the request's timeout passed before Discord's rate limits allowed it; it was not sent")
	// ErrInvalidBudget: too many invalid requests (401, 403, 429) in the
	// last 10 minutes; requests are refused until the count falls.
	ErrInvalidBudget = errors.New("restproxy: the invalid-request budget is spent; the request was not sent")
	// ErrBanned: Discord's Cloudflare answered a ban; requests are refused
	// until it ends.
	ErrBanned = errors.New("restproxy: Discord's Cloudflare banned this address; the request was not sent")
	// ErrInvalidRequest: the request cannot be built; the errors below
	// wrap it and say which part is wrong.
	ErrInvalidRequest = errors.New("restproxy: invalid request")
	// ErrInvalidMethod, ErrInvalidPath, ErrInvalidQuery and
	// ErrInvalidHeaders wrap ErrInvalidRequest.
	ErrInvalidMethod  = fmt.Errorf("%w: method", ErrInvalidRequest)
	ErrInvalidPath    = fmt.Errorf("%w: path", ErrInvalidRequest)
	ErrInvalidQuery   = fmt.Errorf("%w: query", ErrInvalidRequest)
	ErrInvalidHeaders = fmt.Errorf("%w: headers", ErrInvalidRequest)
)

// ErrUpstream wraps a transport error talking to Discord (the request may
// have reached it).
var ErrUpstream = errors.New("restproxy: request to Discord failed")

// DefaultUserAgent is the User-Agent sent when a caller sends none.
const DefaultUserAgent = "DiscordBot (https://github.com/spectacles-go/spectacles, 1.0)"

// Config configures a Proxy. Zero fields take the default in their comment.
type Config struct {
	// APIBase is Discord's API with its version, without a trailing slash.
	// Default "https://discord.com/api/v10".
	APIBase string
	// Authorization is sent when a request has none ("Bot TOKEN"); empty
	// sends such requests without one.
	Authorization string
	// UserAgent is sent when a request has none. Default DefaultUserAgent.
	UserAgent string
	// GlobalLimit is the requests per second per bot (per Authorization).
	// Default 50.
	GlobalLimit int
	// GlobalWindow is the global limit's window. Default 1 s.
	GlobalWindow time.Duration
	// GlobalMargin widens the global window. A request's slot counts from
	// when it is sent until GlobalWindow + GlobalMargin after Discord's
	// answer came back (by when Discord has surely counted it), so that no
	// latency jitter fits more than GlobalLimit requests in any of
	// Discord's windows; the margin covers clock rounding. Default 20 ms;
	// negative means none.
	GlobalMargin time.Duration
	// Timeout bounds a request that comes without a deadline, waits
	// included. Default 15 s.
	Timeout time.Duration
	// MaxRetries bounds the retries of one request after a 429 (and, for
	// idempotent methods, a 502/503/504). Default 3; negative means none.
	MaxRetries int
	// InvalidBudget is how many invalid requests (401, 403, non-shared 429)
	// per 10 minutes the proxy makes before it refuses to send; Discord
	// bans an address at 10,000. Default 5000.
	InvalidBudget int
	// BanPause is how long every request is refused after a Cloudflare ban
	// answer without Retry-After. Default 10 min.
	BanPause time.Duration
	// ResetOffset is added to every bucket reset. Default 50 ms.
	ResetOffset time.Duration
	// MaxResponseBytes bounds a response body read from Discord. Default
	// 32 MiB.
	MaxResponseBytes int64
	// Store holds the limits. Default a new MemoryStore.
	Store Store
	// Client sends the requests. Default a client with HTTP/1.1 keep-alive
	// connections.
	Client *http.Client
	// Metrics, when set, records the proxy's metrics.
	Metrics *Metrics
	// Logger receives diagnostics; it never gets a token, a header or a
	// body. Default: discarded.
	Logger *slog.Logger
}

// Request is one request to forward.
type Request struct {
	// Method is the HTTP method.
	Method string
	// Path is relative to the API base, with a leading "/"; it is used
	// verbatim (percent-encoding kept).
	Path string
	// RawQuery is appended after "?" as given.
	RawQuery string
	// Header holds the caller's headers (Authorization included).
	Header http.Header
	// Body is sent as it is.
	Body []byte
	// APIVersion, when positive, replaces the configured API version (the
	// HTTP side keeps the caller's /api/vN).
	APIVersion int
}

// Response is Discord's answer.
type Response struct {
	Status int
	Header http.Header
	// URL is the URL the request was sent to.
	URL  string
	Body []byte
}

// Proxy forwards requests to Discord under its rate limits. Create it with
// New; it is safe for concurrent use.
type Proxy struct {
	cfg    Config
	root   string // APIBase without its /vN
	store  Store
	client *http.Client
	log    *slog.Logger
	m      *Metrics

	mu     sync.Mutex
	lanes  map[string]*lane // local FIFO per identity+route+major
	recent []RateLimitEvent
	joined func(key string) // tests: called under mu when a request joins a lane
	// revoked holds the identities of bot tokens Discord answered 401,
	// until when their requests are answered locally.
	revoked map[string]time.Time
	// unlimited holds the route keys last answered without bucket headers
	// (bounded: cleared when it passes maxUnlimited).
	unlimited map[string]bool
}

// RevokedFor is how long the requests of a bot token Discord answered 401
// are answered locally (401, marked with MarkerHeader "unauthorized")
// instead of being sent: each would be another invalid request.
const RevokedFor = 10 * time.Minute

// maxRevoked bounds Proxy.revoked.
const maxRevoked = 1024

// revoke stops sending the requests of identity for RevokedFor.
func (p *Proxy) revoke(identity string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.revoked) >= maxRevoked {
		clear(p.revoked)
	}
	p.revoked[identity] = time.Now().Add(RevokedFor)
	p.log.Warn("Discord answered 401 to a bot token: its requests are answered 401 without being sent", "for", RevokedFor.String())
}

// revokedAnswer is the local 401 of a revoked identity, or nil.
func (p *Proxy) revokedAnswer(identity, target string) *Response {
	p.mu.Lock()
	defer p.mu.Unlock()
	until, ok := p.revoked[identity]
	if !ok {
		return nil
	}
	if time.Now().After(until) {
		delete(p.revoked, identity)
		return nil
	}
	h := http.Header{"Content-Type": {"application/json"}, MarkerHeader: {"unauthorized"}}
	return &Response{Status: http.StatusUnauthorized, Header: h, URL: target,
		Body: []byte(`{"message":"401: Unauthorized (answered by the proxy: Discord refused this token)","code":0}`)}
}

// maxUnlimited bounds Proxy.unlimited.
const maxUnlimited = 10000

// isUnlimited reports whether a route key was last answered without
// bucket headers.
func (p *Proxy) isUnlimited(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.unlimited[key]
}

// setUnlimited records whether a route key has only the global limit.
func (p *Proxy) setUnlimited(key string, unlimited bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case unlimited && !p.unlimited[key]:
		if len(p.unlimited) >= maxUnlimited {
			clear(p.unlimited)
		}
		p.unlimited[key] = true
	case !unlimited && p.unlimited[key]:
		delete(p.unlimited, key)
	}
}

// lane serializes one route of one resource in this process, in arrival
// order: the request at its head holds it, the others queue.
type lane struct {
	busy  bool
	queue []chan struct{}
	users int
}

// RateLimitEvent is a 429 the proxy got, for the recent list.
type RateLimitEvent struct {
	At           time.Time `json:"seen_at"`
	Route        string    `json:"route"`
	Scope        string    `json:"scope"`
	RetryAfterMS float64   `json:"retry_after_ms"`
}

// maxRecent bounds the recent 429s kept.
const maxRecent = 50

// New validates cfg and returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.APIBase == "" {
		cfg.APIBase = "https://discord.com/api/v10"
	}
	cfg.APIBase = strings.TrimRight(cfg.APIBase, "/")
	base, err := url.Parse(cfg.APIBase)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("restproxy: API base %q is not an http(s) URL", cfg.APIBase)
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	if cfg.GlobalLimit == 0 {
		cfg.GlobalLimit = 50
	}
	if cfg.GlobalLimit < 0 {
		return nil, fmt.Errorf("restproxy: GlobalLimit must be positive, got %d", cfg.GlobalLimit)
	}
	if cfg.GlobalWindow <= 0 {
		cfg.GlobalWindow = time.Second
	}
	if cfg.GlobalMargin == 0 {
		cfg.GlobalMargin = 20 * time.Millisecond
	} else if cfg.GlobalMargin < 0 {
		cfg.GlobalMargin = 0
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 3
	} else if cfg.MaxRetries < 0 {
		cfg.MaxRetries = 0
	}
	if cfg.InvalidBudget <= 0 {
		cfg.InvalidBudget = 5000
	}
	if cfg.BanPause <= 0 {
		cfg.BanPause = 10 * time.Minute
	}
	if cfg.ResetOffset == 0 {
		cfg.ResetOffset = 50 * time.Millisecond
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 32 << 20
	}
	if cfg.Store == nil {
		cfg.Store = NewMemoryStore()
	}
	if cfg.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 256
		tr.ForceAttemptHTTP2 = false
		cfg.Client = &http.Client{Transport: tr}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	root := cfg.APIBase
	if i := strings.LastIndex(root, "/v"); i >= 0 {
		if _, err := strconv.Atoi(root[i+2:]); err == nil {
			root = root[:i]
		}
	}
	return &Proxy{cfg: cfg, root: root, store: cfg.Store, client: cfg.Client, log: cfg.Logger,
		m: cfg.Metrics, lanes: map[string]*lane{}, unlimited: map[string]bool{},
		revoked: map[string]time.Time{}}, nil
}

// Store returns the proxy's store.
func (p *Proxy) Store() Store { return p.store }

// Config returns the configuration with its defaults.
func (p *Proxy) Config() Config { return p.cfg }

// Recent returns the latest 429s, oldest first.
func (p *Proxy) Recent() []RateLimitEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]RateLimitEvent(nil), p.recent...)
}

// Close closes the store's connections (not the store's data).
func (p *Proxy) Close() error {
	p.client.CloseIdleConnections()
	return p.store.Close()
}

// Do sends req to Discord once its bucket and the global limit allow it,
// retries 429s within its deadline, and returns Discord's answer (4xx and
// 5xx included). Without a deadline on ctx, Config.Timeout applies. An
// error means no answer: ErrTimeout, ErrInvalidBudget, ErrBanned or
// ErrInvalidRequest (not sent), or ErrUpstream (maybe sent).
func (p *Proxy) Do(ctx context.Context, req *Request) (*Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.Timeout)
		defer cancel()
	}
	hreq, target, err := p.build(req)
	if err != nil {
		return nil, err
	}
	auth := hreq.Header.Get("Authorization")
	route := ParseRoute(req.Method, req.Path, time.Now())
	label := p.m.label(route.Key())
	p.m.request(label)
	t := Ticket{Identity: IdentityOf(auth), Route: route.Key(), Major: route.Major}
	if res := p.revokedAnswer(t.Identity, target); res != nil {
		return res, nil
	}

	start := time.Now()
	// A route Discord answered without bucket headers has only the global
	// limit: its requests need not queue behind each other.
	if !p.isUnlimited(t.RouteKey()) {
		if err := p.enter(ctx, t.RouteKey()); err != nil {
			return nil, err
		}
		defer p.exit(t.RouteKey())
	}

	for attempt := 0; ; attempt++ {
		if err := p.checkInvalid(ctx); err != nil {
			return nil, err
		}
		key, err := p.waitBucket(ctx, t)
		if err != nil {
			return nil, err
		}
		slot := ""
		if !route.Exempt {
			if slot, err = p.waitGlobal(ctx, t.Identity); err != nil {
				_ = p.store.Release(context.WithoutCancel(ctx), t, key, Update{Refund: true}, time.Now())
				return nil, err
			}
		}
		p.m.waited(label, time.Since(start))
		sent := time.Now()
		res, err := p.send(ctx, hreq, req.Body, target)
		p.m.upstream(label, time.Since(sent))
		if slot != "" {
			if err := p.store.SettleGlobal(context.WithoutCancel(ctx), t.Identity, slot, time.Now()); err != nil {
				p.log.Warn("rate-limit store: settling a global slot failed", "err", err)
			}
		}
		if err != nil {
			_ = p.store.Release(context.WithoutCancel(ctx), t, key, Update{}, time.Now())
			return nil, err
		}
		p.m.response(label, res.Status)
		u, retry, wait, sleep := p.judge(ctx, route, t, res)
		p.setUnlimited(t.RouteKey(), u.Unlimited)
		if res.Status == http.StatusUnauthorized && strings.HasPrefix(auth, "Bot ") && !strings.HasPrefix(route.Major, "webhooks/") {
			p.revoke(t.Identity)
		}
		if err := p.store.Release(context.WithoutCancel(ctx), t, key, u, time.Now()); err != nil {
			p.log.Warn("rate-limit store release failed", "route", route.Key(), "err", err)
		}
		if !retry || attempt >= p.cfg.MaxRetries {
			return res, nil
		}
		// A retry that cannot be sent before the deadline is not tried:
		// the caller gets Discord's answer.
		if dl, _ := ctx.Deadline(); time.Now().Add(wait).After(dl) {
			return res, nil
		}
		if sleep > 0 && !p.sleep(ctx, sleep) {
			return res, nil
		}
		start = time.Now()
	}
}

// build makes the upstream request of req (without its body).
func (p *Proxy) build(req *Request) (*http.Request, string, error) {
	method := strings.ToUpper(req.Method)
	if method == "" || strings.ContainsAny(method, " \t\r\n/") {
		return nil, "", fmt.Errorf("%w %q", ErrInvalidMethod, req.Method)
	}
	if !strings.HasPrefix(req.Path, "/") || strings.ContainsAny(req.Path, "?# \t\r\n") {
		return nil, "", fmt.Errorf("%w: it must start with / and hold no query, fragment or space", ErrInvalidPath)
	}
	target := p.cfg.APIBase + req.Path
	if req.APIVersion > 0 {
		target = p.root + "/v" + strconv.Itoa(req.APIVersion) + req.Path
	}
	if req.RawQuery != "" {
		if strings.ContainsAny(req.RawQuery, "# \t\r\n") {
			return nil, "", fmt.Errorf("%w: it holds a space or #", ErrInvalidQuery)
		}
		if _, err := url.ParseQuery(req.RawQuery); err != nil {
			return nil, "", fmt.Errorf("%w: %v", ErrInvalidQuery, err)
		}
		target += "?" + req.RawQuery
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrInvalidPath, errors.Unwrap(err))
	}
	hreq := &http.Request{Method: method, URL: u, Header: http.Header{}, Host: u.Host}
	for k, vs := range req.Header {
		ck := http.CanonicalHeaderKey(k)
		switch ck {
		case "Host", "Content-Length", "Connection", "Transfer-Encoding", "Keep-Alive", "Upgrade", "Proxy-Connection", "Te", "Trailer", "Accept-Encoding":
			continue
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				return nil, "", fmt.Errorf("%w: %q holds a line break or NUL", ErrInvalidHeaders, ck)
			}
			if !validHeaderName(ck) {
				return nil, "", fmt.Errorf("%w: %q is not a header name", ErrInvalidHeaders, ck)
			}
			hreq.Header.Add(ck, v)
		}
	}
	if hreq.Header.Get("Authorization") == "" && p.cfg.Authorization != "" {
		hreq.Header.Set("Authorization", p.cfg.Authorization)
	}
	if hreq.Header.Get("User-Agent") == "" {
		hreq.Header.Set("User-Agent", p.cfg.UserAgent)
	}
	return hreq, target, nil
}

// send sends one attempt and reads the whole answer.
func (p *Proxy) send(ctx context.Context, hreq *http.Request, body []byte, target string) (*Response, error) {
	r := hreq.Clone(ctx)
	r.Body = http.NoBody
	if len(body) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	res, err := p.client.Do(r)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w (after it was sent)", ErrUpstream, p.ctxErr(ctx))
		}
		return nil, fmt.Errorf("%w: %s", ErrUpstream, describeTransport(err))
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, p.cfg.MaxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the answer: %s", ErrUpstream, describeTransport(err))
	}
	if int64(len(b)) > p.cfg.MaxResponseBytes {
		return nil, fmt.Errorf("%w: the answer passed %d bytes", ErrUpstream, p.cfg.MaxResponseBytes)
	}
	return &Response{Status: res.StatusCode, Header: res.Header, URL: target, Body: b}, nil
}

// validHeaderName reports whether s is an HTTP token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// describeTransport names a transport error without its URL (which may
// hold a webhook token).
func describeTransport(err error) string {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err.Error()
	}
	return err.Error()
}

// ctxErr is the error of a request whose context ended.
func (p *Proxy) ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ErrTimeout
	}
	return ctx.Err()
}

// enter waits for the head of the lane of key, in arrival order.
func (p *Proxy) enter(ctx context.Context, key string) error {
	p.mu.Lock()
	l := p.lanes[key]
	if l == nil {
		l = &lane{}
		p.lanes[key] = l
	}
	l.users++
	if p.joined != nil {
		p.joined(key)
	}
	if !l.busy {
		l.busy = true
		p.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	l.queue = append(l.queue, ch)
	p.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	for i, c := range l.queue {
		if c == ch {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			p.mu.Unlock()
			p.drop(key, l, false)
			return p.ctxErr(ctx)
		}
	}
	p.mu.Unlock()
	// Handed the lane as ctx ended: pass it on.
	p.exit(key)
	return p.ctxErr(ctx)
}

// exit hands the lane of key to the next request.
func (p *Proxy) exit(key string) {
	p.mu.Lock()
	l := p.lanes[key]
	p.mu.Unlock()
	p.drop(key, l, true)
}

// drop drops a user of l and, when it held the lane, hands it over.
func (p *Proxy) drop(key string, l *lane, held bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l.users--
	if held {
		if len(l.queue) > 0 {
			next := l.queue[0]
			l.queue = l.queue[1:]
			close(next)
		} else {
			l.busy = false
		}
	}
	if l.users == 0 {
		delete(p.lanes, key)
	}
}

// checkInvalid refuses to send past the invalid-request budget or during
// a ban.
func (p *Proxy) checkInvalid(ctx context.Context) error {
	n, banned, err := p.store.Invalid(ctx, time.Now())
	if err != nil {
		return fmt.Errorf("restproxy: rate-limit store: %w", err)
	}
	p.m.invalid(n)
	if !banned.IsZero() {
		return ErrBanned
	}
	if n >= p.cfg.InvalidBudget {
		return ErrInvalidBudget
	}
	return nil
}

// waitBucket waits until the ticket's bucket grants a slot and returns its
// key.
func (p *Proxy) waitBucket(ctx context.Context, t Ticket) (string, error) {
	dl, _ := ctx.Deadline()
	t.Lease = time.Until(dl) + 5*time.Second
	for {
		wake, stop := p.store.Wake(t.Lane())
		g, err := p.store.Acquire(ctx, t, time.Now())
		if err != nil {
			stop()
			return "", fmt.Errorf("restproxy: rate-limit store: %w", err)
		}
		if g.Wait == 0 {
			stop()
			return g.Key, nil
		}
		if !g.Held && time.Now().Add(g.Wait).After(dl) {
			stop()
			return "", ErrTimeout
		}
		timer := time.NewTimer(g.Wait)
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			stop()
			return "", p.ctxErr(ctx)
		}
		timer.Stop()
		stop()
	}
}

// waitGlobal waits until identity's global limit allows one more request
// and returns its slot.
func (p *Proxy) waitGlobal(ctx context.Context, identity string) (string, error) {
	dl, _ := ctx.Deadline()
	for {
		slot, wait, err := p.store.TakeGlobal(ctx, identity, p.cfg.GlobalLimit, p.cfg.GlobalWindow+p.cfg.GlobalMargin, time.Now())
		if err != nil {
			return "", fmt.Errorf("restproxy: rate-limit store: %w", err)
		}
		if wait == 0 {
			return slot, nil
		}
		if time.Now().Add(wait).After(dl) {
			return "", ErrTimeout
		}
		if !p.sleep(ctx, wait) {
			return "", p.ctxErr(ctx)
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func (p *Proxy) sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// judge reads the rate-limit headers of an answer, handles a 429 by its
// scope, and says whether to retry: no sooner than wait, after Do itself
// sleeps sleep (the rest of the wait is left in the store).
func (p *Proxy) judge(ctx context.Context, route Route, t Ticket, res *Response) (u Update, retry bool, wait, sleep time.Duration) {
	h := res.Header
	u.Hash = h.Get("X-RateLimit-Bucket")
	limit, lok := atoi(h.Get("X-RateLimit-Limit"))
	remaining, rok := atoi(h.Get("X-RateLimit-Remaining"))
	resetAfter, aok := seconds(h.Get("X-RateLimit-Reset-After"))
	if !aok {
		if reset, err := strconv.ParseFloat(h.Get("X-RateLimit-Reset"), 64); err == nil && reset > 0 && reset < 1e11 {
			resetAfter, aok = max(time.Until(time.UnixMilli(int64(reset*1000))), 0), true
		}
	}
	if lok && rok && aok {
		u.HasLimits, u.Limit, u.Remaining, u.ResetAfter = true, limit, remaining, resetAfter+p.cfg.ResetOffset
	} else if u.Hash == "" && res.Status < 400 {
		u.Unlimited = true
	}
	now := time.Now()
	switch {
	case res.Status == http.StatusUnauthorized || res.Status == http.StatusForbidden:
		p.addInvalid(ctx, now)
		return u, false, 0, 0
	case res.Status == http.StatusTooManyRequests:
	case res.Status == http.StatusBadGateway || res.Status == http.StatusServiceUnavailable || res.Status == http.StatusGatewayTimeout:
		switch route.Method {
		case "GET", "HEAD", "PUT", "DELETE", "OPTIONS":
			return u, true, 250 * time.Millisecond, 250 * time.Millisecond
		}
		return u, false, 0, 0
	default:
		return u, false, 0, 0
	}
	u.Unlimited = false
	var body struct {
		RetryAfter *float64 `json:"retry_after"`
		Global     bool     `json:"global"`
		Code       *int     `json:"code"`
		Message    string   `json:"message"`
	}
	_ = json.Unmarshal(res.Body, &body)
	wait, ok := seconds(h.Get("Retry-After"))
	if !ok && body.RetryAfter != nil && *body.RetryAfter >= 0 && !math.IsInf(*body.RetryAfter, 0) {
		wait, ok = time.Duration(*body.RetryAfter*float64(time.Second)), true
	}
	if !ok {
		wait = resetAfter
	}
	scope := strings.ToLower(h.Get("X-RateLimit-Scope"))
	noLimitHeaders := u.Hash == "" && !lok && scope == "" && h.Get("X-RateLimit-Global") == ""
	switch {
	case h.Get("X-RateLimit-Global") != "" || scope == "global" || body.Global:
		scope = "global"
		_ = p.store.PauseGlobal(ctx, t.Identity, now.Add(wait))
		p.addInvalid(ctx, now)
	case scope == "shared":
		u.PauseFor = wait
	case noLimitHeaders && h.Get("Via") == "":
		scope = "cloudflare"
		if !ok {
			wait = p.cfg.BanPause
		}
		_ = p.store.Ban(ctx, now.Add(wait))
		p.addInvalid(ctx, now)
		p.log.Error("Discord's Cloudflare answered a ban: every request is refused until it ends", "for", wait.String())
		p.record(route, scope, wait)
		return u, false, 0, 0
	case rok && remaining > 0:
		scope = "sublimit"
		p.addInvalid(ctx, now)
	default:
		if scope == "" {
			scope = "user"
		}
		u.PauseFor = wait
		p.addInvalid(ctx, now)
	}
	p.record(route, scope, wait)
	p.log.Debug("rate limited by Discord", "route", route.Key(), "scope", scope, "retry_after", wait.String())
	return u, true, wait, waitForScope(scope, wait)
}

// waitForScope is how long Do itself sleeps before a retry: only a
// sublimit needs it; other scopes left the wait in the store.
func waitForScope(scope string, wait time.Duration) time.Duration {
	if scope == "sublimit" {
		return wait
	}
	return 0
}

// addInvalid counts an invalid request.
func (p *Proxy) addInvalid(ctx context.Context, now time.Time) {
	if err := p.store.AddInvalid(context.WithoutCancel(ctx), now); err != nil {
		p.log.Warn("rate-limit store: counting an invalid request failed", "err", err)
	}
}

// RecentRecorder is implemented by stores that keep the 429s of every
// proxy sharing them (the Redis store), for `spectacles buckets` and the
// console.
type RecentRecorder interface {
	RecordRateLimit(ctx context.Context, e RateLimitEvent) error
}

// record keeps a 429 for Recent, the metrics, and a store that records
// them.
func (p *Proxy) record(route Route, scope string, wait time.Duration) {
	p.m.rateLimited(scope)
	e := RateLimitEvent{At: time.Now().UTC(), Route: route.Key(), Scope: scope, RetryAfterMS: float64(wait.Microseconds()) / 1000}
	p.mu.Lock()
	if len(p.recent) >= maxRecent {
		p.recent = append(p.recent[:0], p.recent[1:]...)
	}
	p.recent = append(p.recent, e)
	p.mu.Unlock()
	if rr, ok := p.store.(RecentRecorder); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := rr.RecordRateLimit(ctx, e); err != nil {
			p.log.Warn("rate-limit store: recording a 429 failed", "err", err)
		}
	}
}

func atoi(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	return n, err == nil && n >= 0
}

// seconds parses a float number of seconds ("1", "64.57", "0.333").
func seconds(s string) (time.Duration, bool) {
	if s == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f > 1e9 {
		return 0, false
	}
	return time.Duration(f * float64(time.Second)), true
}

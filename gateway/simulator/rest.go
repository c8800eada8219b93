package simulator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultWebhookToken is the webhook token the fake REST accepts when
// RESTConfig.WebhookToken is empty.
const DefaultWebhookToken = "webhook-token"

// InteractionTokenPrefix starts every interaction token: base64 of
// "interaction:". Webhook routes with such a token are interaction
// webhooks, exempt from the global limit.
const InteractionTokenPrefix = "aW50ZXJhY3Rpb246"

// CloudflareBanMessage is the text of the 429 Cloudflare answers to a
// source that made too many invalid requests.
const CloudflareBanMessage = "You are being blocked from accessing our API temporarily due to exceeding our rate limits frequently. Please read our docs at https://discord.com/developers/docs/topics/rate-limits to prevent this moving forward."

// maxRESTBody bounds the request body the fake reads.
const maxRESTBody = 1 << 20

// RESTConfig configures a REST fake. The zero value is usable: every zero
// field takes the default named in its comment.
type RESTConfig struct {
	// Token is the bot token accepted as "Bot TOKEN". Default DefaultToken.
	Token string
	// Tokens are further accepted bot tokens (several bots).
	Tokens []string
	// WebhookToken is the token webhook routes accept (besides interaction
	// tokens). Default DefaultWebhookToken.
	WebhookToken string
	// Routes is the route table. Default DefaultRESTRoutes().
	Routes []RESTRoute
	// TimeScale multiplies every route window and the sublimit window, so
	// that tests run Discord's limits faster. Default 1.
	TimeScale float64
	// GlobalLimit is the requests per GlobalWindow per bot (or per source
	// without authorization), counted over a sliding window. Default 50.
	GlobalLimit int
	// GlobalWindow is the global limit's window. Default 1 s.
	GlobalWindow time.Duration
	// SublimitWindow is the window of the channel name/topic sublimit (2
	// edits per window per channel). Default 10 min, times TimeScale.
	SublimitWindow time.Duration
	// InvalidLimit is how many invalid requests (401, 403, non-shared 429)
	// a source may make per InvalidWindow; the next one starts a ban.
	// Default 10000.
	InvalidLimit int
	// InvalidWindow is the invalid-request window. Default 10 min.
	InvalidWindow time.Duration
	// BanDuration is how long a banned source gets Cloudflare's 429.
	// Default 1 h.
	BanDuration time.Duration
	// ForbiddenChannels answer 403 code 50013 (Missing Permissions).
	ForbiddenChannels []string
	// Latency delays every answer.
	Latency time.Duration
	// ClockOffset is added to X-RateLimit-Reset (a fake whose clock runs
	// ahead of the client's).
	ClockOffset time.Duration
	// OmitResetAfter leaves X-RateLimit-Reset-After out of every answer, so
	// that clients must use X-RateLimit-Reset.
	OmitResetAfter bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// MaxRecords bounds the requests kept for Requests. Default 10000;
	// negative keeps none.
	MaxRecords int
	// Logger receives diagnostics (never a token, a header or a body).
	// Default: discarded.
	Logger *slog.Logger
}

func (c RESTConfig) withDefaults() (RESTConfig, error) {
	if c.Token == "" {
		c.Token = DefaultToken
	}
	if c.WebhookToken == "" {
		c.WebhookToken = DefaultWebhookToken
	}
	if c.Routes == nil {
		c.Routes = DefaultRESTRoutes()
	}
	if c.TimeScale == 0 {
		c.TimeScale = 1
	}
	if c.TimeScale < 0 || math.IsInf(c.TimeScale, 0) || math.IsNaN(c.TimeScale) {
		return c, fmt.Errorf("simulator: TimeScale must be positive, got %v", c.TimeScale)
	}
	if c.GlobalLimit == 0 {
		c.GlobalLimit = 50
	}
	if c.GlobalWindow == 0 {
		c.GlobalWindow = time.Second
	}
	if c.SublimitWindow == 0 {
		c.SublimitWindow = time.Duration(float64(10*time.Minute) * c.TimeScale)
	}
	if c.InvalidLimit == 0 {
		c.InvalidLimit = 10000
	}
	if c.InvalidWindow == 0 {
		c.InvalidWindow = 10 * time.Minute
	}
	if c.BanDuration == 0 {
		c.BanDuration = time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxRecords == 0 {
		c.MaxRecords = 10000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.GlobalLimit < 0 || c.InvalidLimit < 0 {
		return c, errors.New("simulator: negative REST limit")
	}
	return c, nil
}

// REST is a fake of Discord's HTTP API with Discord's rate limits: per-route
// buckets keyed by hash and top-level resource, shared hashes, the global
// limit, 429s of each scope, sublimits and invalid-request bans. It is an
// http.Handler for paths /api/v{n}/...; all methods are safe for
// concurrent use.
type REST struct {
	cfg    RESTConfig
	log    *slog.Logger
	tokens map[string]bool

	mu       sync.Mutex
	buckets  map[string]*restWindow // identity|budget|top-level
	sublimit map[string]*restWindow // identity|channel
	global   map[string][]time.Time // identity -> accepted arrivals in the window
	arrivals map[string][]time.Time // identity -> all counted arrivals in the window
	maxWin   map[string]int
	invalid  map[string][]time.Time // source -> invalid requests in the window
	banned   map[string]time.Time   // source -> end of ban
	shared   map[string]time.Time   // top-level resource -> end of shared limit
	failNext []int
	stats    RESTStats
	records  []RESTRequest
}

// restWindow is a fixed window of a bucket.
type restWindow struct {
	count int
	end   time.Time
}

// RESTStats counts what the fake answered.
type RESTStats struct {
	// Requests is every request received.
	Requests int
	// ByStatus counts answers by HTTP status.
	ByStatus map[int]int
	// Global429, User429, Shared429 and Sublimit429 count 429s by kind.
	Global429, User429, Shared429, Sublimit429 int
	// Banned counts Cloudflare-ban answers.
	Banned int
	// Invalid counts invalid requests (401, 403, non-shared 429).
	Invalid int
}

// RESTRequest is a request the fake received. It holds no Authorization
// value: Identity names the bot by a hash of its token.
type RESTRequest struct {
	Method string
	// Path is the escaped path as received (percent-encoding kept).
	Path string
	// RawQuery is the query as received.
	RawQuery string
	// Identity is "bot:HASH", "bearer:HASH" or "ip:ADDRESS".
	Identity       string
	UserAgent      string
	AuditLogReason string
	ContentType    string
	Body           []byte
	Status         int
	At             time.Time
}

// NewREST validates cfg and returns the fake.
func NewREST(cfg RESTConfig) (*REST, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &REST{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "rest-simulator"),
		tokens:   map[string]bool{cfg.Token: true},
		buckets:  map[string]*restWindow{},
		sublimit: map[string]*restWindow{},
		global:   map[string][]time.Time{},
		arrivals: map[string][]time.Time{},
		maxWin:   map[string]int{},
		invalid:  map[string][]time.Time{},
		banned:   map[string]time.Time{},
		shared:   map[string]time.Time{},
		stats:    RESTStats{ByStatus: map[int]int{}},
	}
	for _, t := range cfg.Tokens {
		r.tokens[t] = true
	}
	return r, nil
}

// IdentityOf returns the Identity the fake records for an Authorization
// value ("Bot TOKEN" or "Bearer TOKEN").
func IdentityOf(authorization string) string {
	kind, tok, ok := strings.Cut(authorization, " ")
	if !ok {
		return ""
	}
	sum := sha256.Sum256([]byte(tok))
	return strings.ToLower(kind) + ":" + hex.EncodeToString(sum[:6])
}

// SetShared makes every request on a top-level resource ("channels/ID")
// answer a shared-scope 429 for d.
func (r *REST) SetShared(resource string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shared[resource] = r.cfg.Now().Add(d)
}

// FailNext makes the next len(statuses) requests answer these statuses
// (5xx injection), before any rate-limit accounting.
func (r *REST) FailNext(statuses ...int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failNext = append(r.failNext, statuses...)
}

// Stats returns the counters.
func (r *REST) Stats() RESTStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.ByStatus = make(map[int]int, len(r.stats.ByStatus))
	for k, v := range r.stats.ByStatus {
		s.ByStatus[k] = v
	}
	return s
}

// MaxGlobalWindow returns the most requests of one identity (see
// IdentityOf) that arrived within any GlobalWindow, 429s included.
func (r *REST) MaxGlobalWindow(identity string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxWin[identity]
}

// Requests returns the requests received, oldest first (at most
// RESTConfig.MaxRecords).
func (r *REST) Requests() []RESTRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]RESTRequest(nil), r.records...)
}

// ServeHTTP answers one request as Discord would.
func (r *REST) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxRESTBody+1))
	if err != nil {
		return
	}
	if len(body) > maxRESTBody {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"message": "Request entity too large", "code": 40005})
		return
	}
	if r.cfg.Latency > 0 {
		select {
		case <-time.After(r.cfg.Latency):
		case <-req.Context().Done():
			return
		}
	}
	a := r.answer(req, body)
	for k, v := range a.headers {
		w.Header().Set(k, v)
	}
	if a.body != nil {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(a.status)
	if a.body != nil {
		_, _ = w.Write(a.body)
	}
}

// restAnswer is what ServeHTTP writes.
type restAnswer struct {
	status  int
	headers map[string]string
	body    []byte
	ban     bool // Cloudflare's answer: no Via, not counted as invalid
}

func jsonAnswer(status int, headers map[string]string, v any) restAnswer {
	b, _ := json.Marshal(v) // maps of strings, numbers and bools
	if headers == nil {
		headers = map[string]string{}
	}
	return restAnswer{status: status, headers: headers, body: b}
}

// answer decides the answer under the lock and records the request.
func (r *REST) answer(req *http.Request, body []byte) restAnswer {
	now := r.cfg.Now()
	path := req.URL.EscapedPath()
	source, _, _ := net.SplitHostPort(req.RemoteAddr)
	auth := req.Header.Get("Authorization")
	identity := IdentityOf(auth)
	rec := RESTRequest{
		Method: req.Method, Path: path, RawQuery: req.URL.RawQuery, Identity: identity,
		UserAgent: req.Header.Get("User-Agent"), AuditLogReason: req.Header.Get("X-Audit-Log-Reason"),
		ContentType: req.Header.Get("Content-Type"), Body: body, At: now,
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.decideLocked(req, body, now, path, source, auth, &identity)
	if !a.isBan() {
		a.headers["Via"] = "1.1 google"
	}
	rec.Identity, rec.Status = identity, a.status
	r.stats.Requests++
	r.stats.ByStatus[a.status]++
	if a.status == 401 || a.status == 403 || (a.status == 429 && a.headers["X-RateLimit-Scope"] != "shared" && !a.isBan()) {
		r.stats.Invalid++
		r.countInvalidLocked(source, now)
	}
	if r.cfg.MaxRecords > 0 {
		if len(r.records) >= r.cfg.MaxRecords {
			r.records = append(r.records[:0], r.records[1:]...)
		}
		r.records = append(r.records, rec)
	}
	return a
}

// isBan reports whether a is Cloudflare's ban answer (no Via header).
func (a restAnswer) isBan() bool { return a.ban }

// countInvalidLocked counts an invalid request of source and bans it past
// the limit.
func (r *REST) countInvalidLocked(source string, now time.Time) {
	list := trimBefore(r.invalid[source], now.Add(-r.cfg.InvalidWindow))
	list = append(list, now)
	r.invalid[source] = list
	if len(list) > r.cfg.InvalidLimit {
		r.banned[source] = now.Add(r.cfg.BanDuration)
		r.log.Warn("source banned for invalid requests", "source", source, "invalid", len(list))
	}
}

// trimBefore drops the times before t from a sorted list.
func trimBefore(list []time.Time, t time.Time) []time.Time {
	i := 0
	for i < len(list) && !list[i].After(t) {
		i++
	}
	return list[i:]
}

// decideLocked applies Discord's checks in order: ban, injected faults,
// route, authorization, global limit, bucket, shared limit, sublimit, then
// the route's own answer.
func (r *REST) decideLocked(req *http.Request, body []byte, now time.Time, path, source, auth string, identity *string) restAnswer {
	if until, ok := r.banned[source]; ok {
		if now.Before(until) {
			r.stats.Banned++
			return restAnswer{status: 429, headers: map[string]string{}, ban: true,
				body: mustJSON(map[string]any{"code": 0, "message": CloudflareBanMessage})}
		}
		delete(r.banned, source)
	}
	if len(r.failNext) > 0 {
		st := r.failNext[0]
		r.failNext = r.failNext[1:]
		return jsonAnswer(st, nil, map[string]any{"message": http.StatusText(st), "code": 0})
	}
	segs, ok := apiSegments(path)
	if !ok {
		return jsonAnswer(404, nil, map[string]any{"message": "404: Not Found", "code": 0})
	}
	m, ok := matchRoute(r.cfg.Routes, req.Method, segs)
	if !ok {
		return jsonAnswer(404, nil, map[string]any{"message": "404: Not Found", "code": 0})
	}
	route := m.route
	exempt := route.GlobalExempt
	switch {
	case strings.HasPrefix(auth, "Bot "):
		if !r.tokens[strings.TrimPrefix(auth, "Bot ")] {
			return jsonAnswer(401, nil, map[string]any{"message": "401: Unauthorized", "code": 0})
		}
	case strings.HasPrefix(auth, "Bearer ") && len(auth) > len("Bearer "):
	case auth == "" && route.NoAuth:
		*identity = "ip:" + source
	default:
		return jsonAnswer(401, nil, map[string]any{"message": "401: Unauthorized", "code": 0})
	}
	if tok := m.vars["token"]; tok != "" && m.vars["webhook"] != "" {
		if strings.HasPrefix(tok, InteractionTokenPrefix) {
			exempt = true
		} else if tok != r.cfg.WebhookToken {
			return jsonAnswer(401, nil, map[string]any{"message": "Invalid Webhook Token", "code": 50027})
		}
	}
	if !exempt && r.cfg.GlobalLimit > 0 {
		if a, limited := r.globalLocked(*identity, now); limited {
			return a
		}
	}
	headers := map[string]string{}
	top := m.topLevel()
	if route.Bucket != "" {
		name, limit, window := route.Bucket, route.Limit, route.Window
		if route.Method == "DELETE" && route.Pattern == "/channels/{channel}/messages/{message}" {
			name, limit, window = deleteAgeBucket(m.vars["message"], now)
		}
		window = time.Duration(float64(window) * r.cfg.TimeScale)
		budget := name
		if route.Independent {
			budget = route.Method + " " + route.Pattern
		}
		key := *identity + "|" + budget + "|" + top
		win := r.buckets[key]
		if win == nil || !now.Before(win.end) {
			win = &restWindow{end: now.Add(window)}
			r.buckets[key] = win
		}
		reset := win.end.Sub(now)
		headers["X-RateLimit-Bucket"] = bucketHash(name)
		headers["X-RateLimit-Limit"] = strconv.Itoa(limit)
		headers["X-RateLimit-Reset"] = strconv.FormatFloat(float64(win.end.Add(r.cfg.ClockOffset).UnixMilli())/1000, 'f', 3, 64)
		if !r.cfg.OmitResetAfter {
			headers["X-RateLimit-Reset-After"] = seconds3(reset)
		}
		if win.count >= limit {
			headers["X-RateLimit-Remaining"] = "0"
			headers["X-RateLimit-Scope"] = "user"
			headers["Retry-After"] = retryAfterHeader(reset)
			r.stats.User429++
			return jsonAnswer(429, headers, map[string]any{"message": "You are being rate limited.", "retry_after": round3(reset), "global": false})
		}
		win.count++
		headers["X-RateLimit-Remaining"] = strconv.Itoa(limit - win.count)
	}
	if until, ok := r.shared[top]; ok && top != "" {
		if now.Before(until) {
			wait := until.Sub(now)
			headers["X-RateLimit-Scope"] = "shared"
			headers["Retry-After"] = retryAfterHeader(wait)
			r.stats.Shared429++
			return jsonAnswer(429, headers, map[string]any{"message": "The resource is being rate limited.", "retry_after": round3(wait), "global": false})
		}
		delete(r.shared, top)
	}
	if route.Method == "PATCH" && route.Pattern == "/channels/{channel}" && renamesChannel(body) {
		key := *identity + "|" + top
		win := r.sublimit[key]
		if win == nil || !now.Before(win.end) {
			win = &restWindow{end: now.Add(r.cfg.SublimitWindow)}
			r.sublimit[key] = win
		}
		if win.count >= 2 {
			wait := win.end.Sub(now)
			headers["X-RateLimit-Scope"] = "user"
			headers["Retry-After"] = retryAfterHeader(wait)
			r.stats.Sublimit429++
			return jsonAnswer(429, headers, map[string]any{"message": "You are being rate limited.", "retry_after": round3(wait), "global": false})
		}
		win.count++
	}
	for _, c := range r.cfg.ForbiddenChannels {
		if m.vars["channel"] == c {
			return jsonAnswer(403, headers, map[string]any{"message": "Missing Permissions", "code": 50013})
		}
	}
	status := route.Status
	if status == 0 {
		status = 200
	}
	if status == 204 {
		return restAnswer{status: 204, headers: headers}
	}
	return jsonAnswer(status, headers, routeBody(m, req.Method, body, now))
}

// globalLocked counts a request against the identity's global limit and
// returns the global 429 when it is over.
func (r *REST) globalLocked(identity string, now time.Time) (restAnswer, bool) {
	from := now.Add(-r.cfg.GlobalWindow)
	arr := append(trimBefore(r.arrivals[identity], from), now)
	r.arrivals[identity] = arr
	if len(arr) > r.maxWin[identity] {
		r.maxWin[identity] = len(arr)
	}
	acc := trimBefore(r.global[identity], from)
	if len(acc) >= r.cfg.GlobalLimit {
		r.global[identity] = acc
		wait := acc[0].Add(r.cfg.GlobalWindow).Sub(now)
		r.stats.Global429++
		return jsonAnswer(429, map[string]string{
			"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global", "Retry-After": retryAfterHeader(wait),
		}, map[string]any{"message": "You are being rate limited.", "retry_after": round3(wait), "global": true}), true
	}
	r.global[identity] = append(acc, now)
	return restAnswer{}, false
}

// apiSegments returns the segments of an /api[/vN]/... path below the
// version.
func apiSegments(path string) ([]string, bool) {
	rest, ok := strings.CutPrefix(path, "/api/")
	if !ok {
		return nil, false
	}
	segs := strings.Split(strings.Trim(rest, "/"), "/")
	if len(segs) > 0 && len(segs[0]) > 1 && segs[0][0] == 'v' {
		if _, err := strconv.Atoi(segs[0][1:]); err == nil {
			segs = segs[1:]
		}
	}
	return segs, len(segs) > 0
}

// renamesChannel reports whether a channel edit changes name or topic.
func renamesChannel(body []byte) bool {
	var v map[string]any
	if json.Unmarshal(body, &v) != nil {
		return false
	}
	_, name := v["name"]
	_, topic := v["topic"]
	return name || topic
}

// routeBody is the JSON a successful request gets: an object with a fresh
// id, the route's variables and, for JSON bodies, the fields sent.
func routeBody(m routeMatch, method string, body []byte, now time.Time) any {
	if method == "GET" && strings.HasSuffix(m.route.Pattern, "/messages") {
		return []any{}
	}
	out := map[string]any{"id": strconv.FormatUint(SnowflakeAt(now), 10)}
	var sent map[string]any
	if json.Unmarshal(body, &sent) == nil {
		for k, v := range sent {
			out[k] = v
		}
	}
	for k, v := range m.vars {
		if k != "token" && k != "rest" {
			out[k+"_id"] = v
		}
	}
	return out
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// seconds3 formats d as seconds with 3 decimals.
func seconds3(d time.Duration) string {
	return strconv.FormatFloat(round3(d), 'f', 3, 64)
}

func round3(d time.Duration) float64 {
	return math.Round(d.Seconds()*1000) / 1000
}

// retryAfterHeader is Retry-After: whole seconds rounded up, as Discord
// sends it, except below one second, where the fake sends the fraction
// (3 decimals) so that scaled-down tests stay fast; clients must parse it
// as a float either way.
func retryAfterHeader(d time.Duration) string {
	if d < time.Second {
		return seconds3(d)
	}
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10)
}

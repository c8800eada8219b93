package restproxy

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MarkerHeader is set on every answer the proxy makes itself (never on
// Discord's answers), with the reason as its value: "invalid-request",
// "timeout", "invalid-budget", "banned", "upstream-error", "too-large".
const MarkerHeader = "X-Spectacles-Proxy"

// HTTPConfig configures an HTTPHandler.
type HTTPConfig struct {
	// MaxBodyBytes bounds a request body. Default 64 MiB.
	MaxBodyBytes int64
	// Logger receives diagnostics (never a token, a header or a body).
	Logger *slog.Logger
}

// HTTPHandler is the transparent HTTP side: http://ADDR/api/vN/PATH is
// forwarded to Discord's /api/vN/PATH with the caller's headers, under the
// rate limits of the caller's Authorization (each token has its own; a
// request without one uses Config.Authorization, else none). It never
// answers 429 for a limit it knows: it waits, up to Config.Timeout or the
// caller's disconnection. Discord's answers, 429s included, pass through
// unchanged.
type HTTPHandler struct {
	p   *Proxy
	cfg HTTPConfig
	log *slog.Logger
}

// NewHTTPHandler returns the HTTP side of p.
func NewHTTPHandler(p *Proxy, cfg HTTPConfig) *HTTPHandler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &HTTPHandler{p: p, cfg: cfg, log: cfg.Logger}
}

// ServeHTTP forwards one request.
func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path, version, ok := splitAPIPath(r.URL.EscapedPath())
	if !ok {
		h.own(w, http.StatusNotFound, "invalid-request", "the proxy serves /api/vN/... only")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.cfg.MaxBodyBytes+1))
	if err != nil {
		return // the caller is gone
	}
	if int64(len(body)) > h.cfg.MaxBodyBytes {
		h.own(w, http.StatusRequestEntityTooLarge, "too-large", "the request body passed "+strconv.FormatInt(h.cfg.MaxBodyBytes, 10)+" bytes")
		return
	}
	res, err := h.p.Do(r.Context(), &Request{Method: r.Method, Path: path, RawQuery: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: body, APIVersion: version})
	if err != nil {
		switch {
		case r.Context().Err() != nil && !errors.Is(err, ErrUpstream):
			return // the caller is gone
		case errors.Is(err, ErrInvalidRequest):
			h.own(w, http.StatusBadRequest, "invalid-request", err.Error())
		case errors.Is(err, ErrTimeout):
			h.own(w, http.StatusGatewayTimeout, "timeout", err.Error())
		case errors.Is(err, ErrInvalidBudget):
			h.own(w, http.StatusServiceUnavailable, "invalid-budget", err.Error())
		case errors.Is(err, ErrBanned):
			h.own(w, http.StatusServiceUnavailable, "banned", err.Error())
		default:
			h.own(w, http.StatusBadGateway, "upstream-error", err.Error())
		}
		return
	}
	for k, vs := range res.Header {
		switch k {
		case "Content-Length", "Connection", "Transfer-Encoding", "Keep-Alive":
			continue
		}
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(res.Body)))
	w.WriteHeader(res.Status)
	_, _ = w.Write(res.Body)
}

// own writes an answer of the proxy's own, marked with MarkerHeader.
func (h *HTTPHandler) own(w http.ResponseWriter, status int, reason, message string) {
	b, _ := json.Marshal(map[string]any{"message": message, "code": 0, "proxy": reason})
	w.Header().Set(MarkerHeader, reason)
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "60")
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
	h.log.Debug("answered by the proxy", "status", status, "reason", reason)
}

// splitAPIPath splits /api[/vN]/PATH into /PATH and N (0 when absent).
func splitAPIPath(p string) (string, int, bool) {
	rest, ok := strings.CutPrefix(p, "/api/")
	if !ok {
		return "", 0, false
	}
	version := 0
	if seg, after, _ := strings.Cut(rest, "/"); len(seg) > 1 && seg[0] == 'v' {
		if n, err := strconv.Atoi(seg[1:]); err == nil && n > 0 && n < 100 {
			version, rest = n, after
		}
	}
	if rest == "" {
		return "", 0, false
	}
	return "/" + rest, version, true
}

// AdminHandler serves the proxy's state, a Snapshot as JSON: {buckets,
// recent_429s, invalid_count, ban_ends_at}.
func AdminHandler(p *Proxy) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		buckets, err := p.Store().Buckets(r.Context(), now)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		n, banned, _ := p.Store().Invalid(r.Context(), now)
		doc := Snapshot{Buckets: buckets, Recent: p.Recent(), InvalidCount: n}
		if !banned.IsZero() {
			b := banned.UTC()
			doc.BannedUntil = &b
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	})
}

// Snapshot is the proxy's state for `spectacles buckets`.
type Snapshot struct {
	Buckets      []BucketState    `json:"buckets"`
	Recent       []RateLimitEvent `json:"recent_429s"`
	InvalidCount int              `json:"invalid_count"`
	BannedUntil  *time.Time       `json:"ban_ends_at,omitempty"`
}

package restproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// InteractionTokenPrefix starts every interaction token (base64 of
// "interaction:"); webhook routes with such a token are interaction
// webhooks, exempt from the global limit.
const InteractionTokenPrefix = "aW50ZXJhY3Rpb246"

// Snowflake-age thresholds of the message-delete buckets.
const (
	oldMessageAge   = 14 * 24 * time.Hour
	youngMessageAge = 10 * time.Second
	discordEpochMS  = 1420070400000
)

// Route is what a request is rate limited by before Discord named its
// bucket: the method and route template, and the top-level resource.
type Route struct {
	// Method is the HTTP method, upper case.
	Method string
	// Template is the path with every id after the top-level resource
	// replaced by :id, the webhook or interaction token by :token and
	// everything after /reactions by :reaction; a DELETE of a message gets
	// "#old" (older than 14 days) or "#young" (younger than 10 s). It is
	// the bounded label of metrics.
	Template string
	// Major is the top-level resource: "channels/ID", "guilds/ID",
	// "webhooks/ID", "webhooks/ID/HASH" (a hash of the token, never the
	// token), "interactions/ID", or "" for none.
	Major string
	// Exempt routes (interaction callbacks, interaction webhooks) are not
	// counted against the global limit.
	Exempt bool
}

// Key is the route's method and template, as "POST /channels/:id/messages".
func (r Route) Key() string { return r.Method + " " + r.Template }

// ParseRoute classifies a request. path is relative to /api/v{n} (a
// leading /api or /api/vN is removed), percent-encoding kept, without the
// query; now dates message snowflakes.
func ParseRoute(method, path string, now time.Time) Route {
	method = strings.ToUpper(method)
	segs := splitPath(path)
	r := Route{Method: method}
	var out []string
	i := 0
	if len(segs) >= 2 && isSnowflake(segs[1]) {
		switch segs[0] {
		case "channels", "guilds", "webhooks":
			r.Major = segs[0] + "/" + segs[1]
			out = append(out, segs[0], ":id")
			i = 2
			if segs[0] == "webhooks" && len(segs) >= 3 {
				r.Major += "/" + shortHash(segs[2])
				out = append(out, ":token")
				i = 3
				if strings.HasPrefix(segs[2], InteractionTokenPrefix) {
					r.Exempt = true
				}
			}
		case "interactions":
			r.Major = "interactions/" + segs[1]
			out = append(out, "interactions", ":id")
			i = 2
			if len(segs) >= 3 {
				out = append(out, ":token")
				i = 3
			}
			r.Exempt = true
		}
	}
	for ; i < len(segs); i++ {
		s := segs[i]
		switch {
		case s == "reactions":
			out = append(out, "reactions")
			if i+1 < len(segs) {
				out = append(out, ":reaction")
			}
			i = len(segs)
		case isSnowflake(s):
			out = append(out, ":id")
		case len(s) >= 64:
			out = append(out, ":token")
		case i > 0 && segs[i-1] == "invites":
			out = append(out, ":code")
		default:
			out = append(out, s)
		}
	}
	r.Template = "/" + strings.Join(out, "/")
	if method == "DELETE" && len(segs) == 4 && segs[0] == "channels" && segs[2] == "messages" && isSnowflake(segs[1]) && isSnowflake(segs[3]) {
		id, _ := strconv.ParseUint(segs[3], 10, 64)
		age := now.Sub(time.UnixMilli(int64(id>>22) + discordEpochMS))
		switch {
		case age > oldMessageAge:
			r.Template += "#old"
		case age < youngMessageAge:
			r.Template += "#young"
		}
	}
	return r
}

// splitPath returns the segments of a path below the API version.
func splitPath(path string) []string {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	path = strings.Trim(path, "/")
	segs := strings.Split(path, "/")
	if len(segs) > 0 && segs[0] == "api" {
		segs = segs[1:]
		if len(segs) > 0 && len(segs[0]) > 1 && segs[0][0] == 'v' {
			if _, err := strconv.Atoi(segs[0][1:]); err == nil {
				segs = segs[1:]
			}
		}
	}
	out := segs[:0]
	for _, s := range segs {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// isSnowflake reports whether s is a 17 to 20 digit id.
func isSnowflake(s string) bool {
	if len(s) < 17 || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// shortHash is a stable, non-reversible name for a secret (a token).
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// IdentityOf is the limiter's name for an Authorization value: a hash, so
// that no token is kept, logged or written to Redis; "noauth" without one.
func IdentityOf(authorization string) string {
	if authorization == "" {
		return "noauth"
	}
	return shortHash(authorization)
}

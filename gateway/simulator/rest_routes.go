package simulator

import (
	"crypto/md5"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// RESTRoute is one route of the fake Discord REST API: a method and a path
// pattern with the limit Discord applies to it.
type RESTRoute struct {
	// Method is the HTTP method.
	Method string
	// Pattern is the path below /api/v10, with {name} for a variable
	// segment; {channel}, {guild} and {webhook} (with {token} after it) are
	// the top-level resources, and {rest} matches the rest of the path.
	Pattern string
	// Bucket names the limit: routes with the same Bucket share one
	// X-RateLimit-Bucket hash. Empty: the route has no per-route limit
	// (only the global one) and answers without bucket headers.
	Bucket string
	// Independent gives the route its own budget although it shares its
	// Bucket's hash, as Discord does for POST and PATCH messages
	// (discord/discord-api-docs#1442).
	Independent bool
	// Limit and Window are the route's limit: Limit requests per fixed
	// Window that starts at the first request.
	Limit  int
	Window time.Duration
	// GlobalExempt routes are not counted against the global limit
	// (interaction callbacks and interaction webhooks).
	GlobalExempt bool
	// NoAuth routes are served without an Authorization header.
	NoAuth bool
	// Status is the status of a successful answer. Default 200.
	Status int
}

// DefaultRESTRoutes returns the fake's route table: a small, realistic
// subset of Discord's routes with the limits observed in the wild (see
// shared/reference/rest-proxy.md §1.7).
func DefaultRESTRoutes() []RESTRoute {
	s := time.Second
	return []RESTRoute{
		{Method: "GET", Pattern: "/users/@me", Bucket: "users-me", Limit: 5, Window: 5 * s},
		{Method: "GET", Pattern: "/channels/{channel}", Bucket: "channel-get", Limit: 5, Window: 5 * s},
		// Channel edits: a 5/5 s bucket with the name/topic sublimit
		// (2 per 10 min), applied by the handler.
		{Method: "PATCH", Pattern: "/channels/{channel}", Bucket: "channel-patch", Limit: 5, Window: 5 * s},
		{Method: "GET", Pattern: "/channels/{channel}/messages", Bucket: "messages-get", Limit: 5, Window: 5 * s},
		{Method: "GET", Pattern: "/channels/{channel}/messages/{message}", Bucket: "message-get", Limit: 5, Window: 5 * s},
		{Method: "POST", Pattern: "/channels/{channel}/messages", Bucket: "messages-write", Limit: 5, Window: 5 * s, Independent: true},
		{Method: "PATCH", Pattern: "/channels/{channel}/messages/{message}", Bucket: "messages-write", Limit: 5, Window: 5 * s, Independent: true},
		// DELETE message: the bucket depends on the message's age, see
		// deleteAgeBucket.
		{Method: "DELETE", Pattern: "/channels/{channel}/messages/{message}", Bucket: "message-delete", Limit: 5, Window: s},
		// Reactions: adding, removing and clearing share one budget.
		{Method: "PUT", Pattern: "/channels/{channel}/messages/{message}/reactions/{rest}", Bucket: "reactions", Limit: 1, Window: 250 * time.Millisecond, Status: 204},
		{Method: "DELETE", Pattern: "/channels/{channel}/messages/{message}/reactions/{rest}", Bucket: "reactions", Limit: 1, Window: 250 * time.Millisecond, Status: 204},
		{Method: "DELETE", Pattern: "/channels/{channel}/messages/{message}/reactions", Bucket: "reactions", Limit: 1, Window: 250 * time.Millisecond, Status: 204},
		{Method: "GET", Pattern: "/channels/{channel}/messages/{message}/reactions/{rest}", Bucket: "reactions-get", Limit: 5, Window: s},
		{Method: "POST", Pattern: "/channels/{channel}/typing", Bucket: "typing", Limit: 5, Window: 5 * s, Status: 204},
		{Method: "GET", Pattern: "/guilds/{guild}", Bucket: "guild-get", Limit: 5, Window: 5 * s},
		{Method: "GET", Pattern: "/guilds/{guild}/members/{user}", Bucket: "member-get", Limit: 5, Window: s},
		{Method: "POST", Pattern: "/guilds/{guild}/channels", Bucket: "guild-channels", Limit: 5, Window: 5 * s},
		{Method: "GET", Pattern: "/guilds/{guild}/emojis", Bucket: "emojis", Limit: 5, Window: 5 * s},
		{Method: "GET", Pattern: "/webhooks/{webhook}", Bucket: "webhook-get", Limit: 5, Window: 5 * s},
		{Method: "POST", Pattern: "/webhooks/{webhook}/{token}", Bucket: "webhook-exec", Limit: 5, Window: 2 * s, NoAuth: true},
		{Method: "PATCH", Pattern: "/webhooks/{webhook}/{token}/messages/{message}", Bucket: "webhook-edit", Limit: 5, Window: 2 * s, NoAuth: true},
		{Method: "POST", Pattern: "/interactions/{interaction}/{token}/callback", Bucket: "interaction-callback", Limit: 50, Window: s, GlobalExempt: true, NoAuth: true, Status: 204},
		// Routes with only the global limit.
		{Method: "GET", Pattern: "/voice/regions"},
		{Method: "GET", Pattern: "/applications/@me"},
	}
}

// Message-delete buckets by the message's age (discord/discord-api-docs#8330).
const (
	deleteOldAge   = 14 * 24 * time.Hour
	deleteYoungAge = 10 * time.Second
)

// deleteAgeBucket returns the bucket, limit and window of a DELETE message
// by the snowflake's age: older than 14 days 30 per 4 s, older than 10 s 3
// per 333 ms, younger 5 per 1 s.
func deleteAgeBucket(messageID string, now time.Time) (string, int, time.Duration) {
	id, err := strconv.ParseUint(messageID, 10, 64)
	if err != nil {
		return "message-delete", 5, time.Second
	}
	age := now.Sub(SnowflakeTime(id))
	switch {
	case age > deleteOldAge:
		return "message-delete-old", 30, 4 * time.Second
	case age > deleteYoungAge:
		return "message-delete", 3, 333 * time.Millisecond
	}
	return "message-delete-young", 5, time.Second
}

// DiscordEpoch is the first millisecond of 2015, the epoch of snowflakes.
const DiscordEpoch = 1420070400000

// SnowflakeTime returns the time a snowflake was created.
func SnowflakeTime(id uint64) time.Time {
	return time.UnixMilli(int64(id>>22) + DiscordEpoch)
}

// SnowflakeAt returns a snowflake created at t.
func SnowflakeAt(t time.Time) uint64 {
	return uint64(t.UnixMilli()-DiscordEpoch) << 22
}

// bucketHash is the 32-hex X-RateLimit-Bucket of a bucket name.
func bucketHash(name string) string {
	sum := md5.Sum([]byte("spectacles-simulator:" + name))
	return hex.EncodeToString(sum[:])
}

// BucketHash returns the X-RateLimit-Bucket the fake sends for a
// RESTRoute.Bucket name, for tests.
func BucketHash(bucket string) string { return bucketHash(bucket) }

// routeMatch is a matched route with its variables.
type routeMatch struct {
	route *RESTRoute
	vars  map[string]string
}

// matchRoute finds the route of method and the segments of a path.
func matchRoute(routes []RESTRoute, method string, segs []string) (routeMatch, bool) {
	for i := range routes {
		r := &routes[i]
		if r.Method != method {
			continue
		}
		if vars, ok := matchPattern(r.Pattern, segs); ok {
			return routeMatch{route: r, vars: vars}, true
		}
	}
	return routeMatch{}, false
}

// matchPattern matches path segments against a pattern.
func matchPattern(pattern string, segs []string) (map[string]string, bool) {
	pat := strings.Split(strings.Trim(pattern, "/"), "/")
	vars := map[string]string{}
	for i, p := range pat {
		if p == "{rest}" {
			if i >= len(segs) {
				return nil, false
			}
			vars["rest"] = strings.Join(segs[i:], "/")
			return vars, true
		}
		if i >= len(segs) {
			return nil, false
		}
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			vars[p[1:len(p)-1]] = segs[i]
			continue
		}
		if p != segs[i] {
			return nil, false
		}
	}
	return vars, len(pat) == len(segs)
}

// topLevel returns the top-level resource of a match: channels/ID,
// guilds/ID, webhooks/ID[/TOKEN] or interactions/ID.
func (m routeMatch) topLevel() string {
	switch {
	case m.vars["channel"] != "":
		return "channels/" + m.vars["channel"]
	case m.vars["guild"] != "":
		return "guilds/" + m.vars["guild"]
	case m.vars["webhook"] != "" && m.vars["token"] != "":
		return "webhooks/" + m.vars["webhook"] + "/" + m.vars["token"]
	case m.vars["webhook"] != "":
		return "webhooks/" + m.vars["webhook"]
	case m.vars["interaction"] != "":
		return "interactions/" + m.vars["interaction"]
	}
	return ""
}

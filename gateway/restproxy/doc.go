// Package restproxy forwards requests to Discord's HTTP API under Discord's
// rate limits, for many callers and several processes at once: the engine
// of `spectacles proxy`, with its broker side (REQUEST events) and its
// HTTP side (a transparent proxy).
//
// Limits, as Discord documents them and as the best libraries apply them:
//
//   - Before Discord named a route's bucket, a request is limited by its
//     route (ParseRoute: method, template with the ids after the top-level
//     resource replaced, reactions collapsed, message deletes split by
//     age) and its top-level resource (channel, guild, webhook id+token,
//     interaction). After an answer with X-RateLimit-Bucket, the route
//     maps to that hash and every route with the same hash and resource
//     shares one bucket. Discord sometimes sends one hash for independent
//     limits (POST and PATCH messages): sharing them costs throughput,
//     never a 429.
//   - One request per bucket is in flight at a time (as discord.js,
//     twilight, disgo and nirn do), and the requests of one route and
//     resource leave in arrival order; a bucket's Remaining and
//     Reset-After (plus Config.ResetOffset) decide when the next may go.
//   - The global limit (Config.GlobalLimit, 50 per second per token by
//     default) is a sliding window of slots taken when a request is sent,
//     after its bucket wait. A slot counts while its request is in flight
//     and for 1 s + Config.GlobalMargin after Discord's answer came, by
//     when Discord has surely counted the request: whatever the latency,
//     every second Discord counts holds at most the limit. Interaction
//     callbacks and interaction webhooks are exempt.
//   - A 429 is handled by its scope: global pauses the token for
//     Retry-After + Config.GlobalMargin (Discord rounds Retry-After to the
//     millisecond, so a retry at exactly it may come early), shared and
//     user pause the bucket for Retry-After (shared 429s are not invalid
//     requests), a sublimit (429 while Remaining > 0) waits for that
//     request only, and Cloudflare's ban (no rate-limit headers, no Via)
//     stops every request. 429s are retried up to Config.MaxRetries times
//     within the request's deadline; a wait that cannot end before the
//     deadline fails at once with ErrTimeout, and the request is not sent.
//   - Invalid requests (401, 403, non-shared 429) are counted over 10
//     minutes; past Config.InvalidBudget the proxy refuses to send
//     (ErrInvalidBudget) instead of getting the address banned. A bot
//     token Discord answered 401 is answered 401 locally for RevokedFor
//     (webhook routes excepted, whose 401 concerns the webhook token).
//
// State lives in a Store: MemoryStore for one process, or
// restproxy/redisstore, which shares buckets, learned hashes, the global
// limit and the invalid-request count between processes through Redis.
//
// Tokens are never logged, kept or written to a store: identities are
// hashes of the Authorization value, webhook tokens are hashed in bucket
// keys, and no request body or header reaches a log at any level.
package restproxy

// Package simulator is a local simulator of Discord's gateway, for tests,
// benchmarks and demos that cannot reach Discord.
//
// A Server listens on 127.0.0.1 and serves GET /api/v10/gateway/bot and the
// gateway websocket (/?v=10&encoding=json[&compress=zlib-stream|zstd-stream]).
// It implements the gateway protocol as Discord documents it: Hello,
// Identify or Resume first, heartbeats and their ACKs, sessions with
// sequence numbers and a replay buffer, READY followed by lazy GUILD_CREATE,
// identify concurrency buckets, the send rate limit, payload limits, intents
// and the close codes. Synthetic traffic (MESSAGE_CREATE and friends) is
// routed to the session that owns each guild by
// (guild_id >> 22) % shard_count; Dispatch injects specific events. Fault
// injection methods (Reconnect, InvalidateSession, DropConnection,
// CloseConnection, SetHeartbeatACKs, RequestHeartbeat,
// ReconnectBeforeHello, ExpireSession) act on a shard's connection, and
// Snapshot and WaitFor expose everything clients sent. Opcodes, close
// codes and intents are package discord's, shared with the gateway.
//
// Choices where Discord's documentation says nothing definite:
//
//   - resume_gateway_url is ws://127.0.0.1:PORT/resume: the same server
//     under another path, so a test can tell (ConnectionRecord.ResumeURL,
//     ResumeRecord.ViaResumeURL) whether a client used it. Resuming on the
//     main URL is also accepted, as Discord does.
//   - An encoding other than json (including etf, which Discord supports but
//     the simulator does not) or an unknown compress value closes with 4002;
//     a v other than Config.APIVersion closes with 4012, both right after
//     the upgrade, before Hello.
//   - Heartbeats are allowed before Identify. A connection that sends no
//     heartbeat for Config.HeartbeatTimeout (1.5 intervals) is closed with
//     Config.ZombieCloseCode, 4009 by default, which ends its session.
//   - After op 9 (identify rate limit, refused Resume, InvalidateSession)
//     the connection stays open and unauthenticated: the client may send
//     Identify or Resume on it, as Discord allows; if it has not within
//     Config.CloseGrace the server closes it with 4000. After op 7 the
//     session is detached at once and the server closes the connection with
//     4000 after Config.CloseGrace if the client has not.
//   - A Resume whose seq is beyond the session's last closes with 4007 and
//     ends the session; an unknown, expired or ended session, or a seq no
//     longer buffered, gets op 9 d:false.
//   - A second Identify or a Resume on an authenticated connection closes
//     with 4005; any payload other than Heartbeat, Identify or Resume
//     before authentication closes with 4003; opcodes a client may not
//     send (0, 7, 9, 10, 11, or unknown ones) close with 4001.
//   - A missing or non-integer intents field closes with 4013.
//   - When session_start_limit.remaining is 0 the token counts as reset:
//     Identify closes with 4004.
//   - Client-closed 1000/1001 ends the session at once; server-sent 4007 and
//     4009 end it; any other close, and a dropped TCP connection, leave it
//     resumable for Config.SessionTTL, during which synthetic traffic keeps
//     accumulating in its replay buffer.
//   - Events are filtered by intents as Discord does (GUILD_CREATE needs
//     GUILDS, MESSAGE_CREATE needs GUILD_MESSAGES, and so on); message
//     content is empty without MESSAGE_CONTENT. Dispatch is not filtered.
//   - Identify's compress: true (per-payload zlib) is honoured only without
//     transport compression.
//   - Close drops every connection without a close frame.
//
// REST (NewREST) is the REST counterpart: a fake of Discord's HTTP API with
// its rate limits (per-route buckets keyed by X-RateLimit-Bucket hash and
// top-level resource, shared hashes, the sliding global limit, user,
// global, shared and sublimit 429s, invalid-request counting and
// Cloudflare bans), configurable clock, time scale and limits, and
// counters for tests. Config.REST serves it beside the gateway.
//
// Tokens are never logged nor recorded: Received payloads of Identify and
// Resume have their token replaced by "[redacted]".
package simulator

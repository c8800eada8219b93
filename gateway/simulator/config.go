package simulator

import (
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// DefaultToken is the bot token a Server accepts when Config.Token is empty.
const DefaultToken = "simulator-token"

// Config configures a Server. The zero value is usable: every zero field
// takes the default named in its comment.
type Config struct {
	// Addr is the TCP address to listen on. Default "127.0.0.1:0" (a free
	// port on the loopback interface).
	Addr string
	// Token is the bot token clients must present. Default DefaultToken.
	Token string
	// Shards is the shard count GET /gateway/bot recommends. Default 1.
	Shards int
	// RequireShardCount makes an Identify whose shard count differs from
	// Shards close with 4010. Without it any count is accepted (a client
	// may reshard) and guilds are routed with the count it identified with.
	RequireShardCount bool
	// Guilds is the number of simulated guilds over all shards. Default 10;
	// a negative value means none.
	Guilds int
	// MaxGuildsPerShard is the most guilds one shard may hold; an Identify
	// for a shard with more closes with 4011. Default 2500.
	MaxGuildsPerShard int
	// APIVersion is the only accepted value of the v query parameter; any
	// other closes with 4012. Default 10.
	APIVersion int

	// HeartbeatInterval is sent in Hello. Default 41.25 s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long the server waits for a heartbeat (after
	// Hello, then after each heartbeat) before it closes the connection as a
	// zombie with ZombieCloseCode. Default 1.5 × HeartbeatInterval; negative
	// disables the check.
	HeartbeatTimeout time.Duration
	// ZombieCloseCode closes connections that stopped heartbeating. Default
	// 4009 (session timed out), which also ends the session.
	ZombieCloseCode int

	// SessionTTL is how long a session stays resumable after its connection
	// ended with any close other than a client's 1000/1001. Default 3 min.
	SessionTTL time.Duration
	// ReplayBuffer is how many dispatches each session keeps for Resume.
	// Default 8192. A connection that falls further behind than this is
	// closed with 4000.
	ReplayBuffer int

	// MaxConcurrency is session_start_limit.max_concurrency: the number of
	// identify buckets (shard_id % MaxConcurrency). Default 1.
	MaxConcurrency int
	// IdentifyInterval is the minimum time between two accepted Identifies
	// of one bucket; a faster Identify gets op 9 d:false. Default 5 s;
	// negative disables the limit.
	IdentifyInterval time.Duration
	// SessionStartLimit is session_start_limit.total. Default 1000. When
	// remaining reaches 0 the token counts as reset: Identify closes 4004.
	SessionStartLimit int
	// SessionStartReset is the session_start_limit window. Default 24 h.
	SessionStartReset time.Duration
	// AllowedPrivilegedIntents are the privileged intents the application
	// may use (a subset of discord.PrivilegedIntents). Default none.
	AllowedPrivilegedIntents discord.Intent

	// SendLimit is how many payloads a client may send per SendWindow on one
	// connection; the next one closes with 4008. Default 120.
	SendLimit int
	// SendWindow is the sliding window of SendLimit. Default 60 s.
	SendWindow time.Duration
	// MaxPayloadSize is the largest payload a client may send, in bytes;
	// larger closes with 4002. Default 4096.
	MaxPayloadSize int

	// ZlibChunkSize, when positive, splits every zlib-stream message into
	// websocket messages of at most this many bytes, so that clients must
	// buffer until the 00 00 ff ff suffix.
	ZlibChunkSize int

	// CloseGrace is how long a connection may stay open after the server
	// sent op 7, or op 9 without a new Identify/Resume, before the server
	// closes it with 4000. Default 5 s.
	CloseGrace time.Duration
	// CloseTimeout is how long the server waits for the client's close
	// frame after sending its own before dropping the TCP connection.
	// Default 1 s.
	CloseTimeout time.Duration
	// WriteTimeout bounds each websocket write. Default 10 s.
	WriteTimeout time.Duration

	// TrafficRate is the rate of synthetic dispatches, per second, over all
	// guilds. 0 disables synthetic traffic; a negative or infinite rate
	// generates as fast as the connected clients read (the generator waits
	// when a connected session has more than half its replay buffer
	// unsent). SetTrafficRate changes it while running.
	TrafficRate float64
	// TrafficEvents are the synthetic event types, chosen uniformly. Default
	// a weighted mix of MESSAGE_CREATE, TYPING_START, MESSAGE_REACTION_ADD,
	// PRESENCE_UPDATE and MESSAGE_DELETE. See SyntheticEvents.
	TrafficEvents []string

	// REST, when set, serves every /api/ path other than the gateway's
	// (a REST fake, see NewREST), so that one address answers both.
	REST http.Handler

	// Seed makes guild, channel and user ids reproducible. Default 1.
	Seed uint64
	// Logger receives diagnostics (never a token). Default: discarded.
	Logger *slog.Logger
}

// eventIntent returns the intent a synthetic event type needs, and whether
// the generator can produce it.
func eventIntent(t string) (discord.Intent, bool) {
	switch t {
	case "MESSAGE_CREATE", "MESSAGE_DELETE":
		return discord.IntentGuildMessages, true
	case "TYPING_START":
		return discord.IntentGuildMessageTyping, true
	case "MESSAGE_REACTION_ADD":
		return discord.IntentGuildMessageReactions, true
	case "PRESENCE_UPDATE":
		return discord.IntentGuildPresences, true
	}
	return 0, false
}

// SyntheticEvents returns the event types Config.TrafficEvents may name.
func SyntheticEvents() []string {
	return []string{"MESSAGE_CREATE", "MESSAGE_DELETE", "TYPING_START", "MESSAGE_REACTION_ADD", "PRESENCE_UPDATE"}
}

// defaultMix returns the default synthetic traffic, each type repeated by
// its weight.
func defaultMix() []string {
	mix := make([]string, 0, 20)
	for _, w := range []struct {
		t string
		n int
	}{{"MESSAGE_CREATE", 10}, {"TYPING_START", 4}, {"MESSAGE_REACTION_ADD", 2}, {"PRESENCE_UPDATE", 3}, {"MESSAGE_DELETE", 1}} {
		for range w.n {
			mix = append(mix, w.t)
		}
	}
	return mix
}

// withDefaults returns c with every zero field set to its default, or an
// error for a value that cannot work.
func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.Token == "" {
		c.Token = DefaultToken
	}
	if c.Shards == 0 {
		c.Shards = 1
	}
	if c.Shards < 0 {
		return c, fmt.Errorf("simulator: Shards %d: must be positive", c.Shards)
	}
	switch {
	case c.Guilds == 0:
		c.Guilds = 10
	case c.Guilds < 0:
		c.Guilds = 0
	}
	if c.MaxGuildsPerShard <= 0 {
		c.MaxGuildsPerShard = 2500
	}
	if c.APIVersion == 0 {
		c.APIVersion = 10
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 41250 * time.Millisecond
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = c.HeartbeatInterval * 3 / 2
	}
	if c.ZombieCloseCode == 0 {
		c.ZombieCloseCode = discord.CloseSessionTimedOut
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 3 * time.Minute
	}
	if c.ReplayBuffer <= 0 {
		c.ReplayBuffer = 8192
	}
	if c.MaxConcurrency <= 0 {
		c.MaxConcurrency = 1
	}
	if c.IdentifyInterval == 0 {
		c.IdentifyInterval = 5 * time.Second
	}
	if c.SessionStartLimit <= 0 {
		c.SessionStartLimit = 1000
	}
	if c.SessionStartReset <= 0 {
		c.SessionStartReset = 24 * time.Hour
	}
	if c.AllowedPrivilegedIntents&^discord.PrivilegedIntents != 0 {
		return c, fmt.Errorf("simulator: AllowedPrivilegedIntents %#x: not privileged intents", c.AllowedPrivilegedIntents)
	}
	if c.SendLimit <= 0 {
		c.SendLimit = 120
	}
	if c.SendWindow <= 0 {
		c.SendWindow = 60 * time.Second
	}
	if c.MaxPayloadSize <= 0 {
		c.MaxPayloadSize = discord.MaxPayloadBytes
	}
	if c.CloseGrace <= 0 {
		c.CloseGrace = 5 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if math.IsNaN(c.TrafficRate) {
		return c, fmt.Errorf("simulator: TrafficRate is NaN")
	}
	if len(c.TrafficEvents) == 0 {
		c.TrafficEvents = defaultMix()
	} else {
		c.TrafficEvents = append([]string(nil), c.TrafficEvents...)
	}
	for _, t := range c.TrafficEvents {
		if _, ok := eventIntent(t); !ok {
			return c, fmt.Errorf("simulator: TrafficEvents: %q is not a synthetic event (see SyntheticEvents)", t)
		}
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

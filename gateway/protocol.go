package gateway

import (
	"encoding/json"
	"fmt"
)

// Gateway opcodes.
const (
	OpDispatch            = 0
	OpHeartbeat           = 1
	OpIdentify            = 2
	OpPresenceUpdate      = 3
	OpVoiceStateUpdate    = 4
	OpResume              = 6
	OpReconnect           = 7
	OpRequestGuildMembers = 8
	OpInvalidSession      = 9
	OpHello               = 10
	OpHeartbeatACK        = 11
	OpRequestSoundboard   = 31
	OpRequestChannelInfo  = 43
)

// WorkerOpcodes are the opcodes a worker may send through the broker. The
// gateway owns identify, resume and heartbeat.
var WorkerOpcodes = map[int]string{
	OpPresenceUpdate:      "presence update",
	OpVoiceStateUpdate:    "voice state update",
	OpRequestGuildMembers: "request guild members",
	OpRequestSoundboard:   "request soundboard sounds",
	OpRequestChannelInfo:  "request channel info",
}

// MaxPayloadBytes is the largest payload Discord accepts from a client.
const MaxPayloadBytes = 4096

// Payload is a gateway message. D stays raw so that dispatches are not
// parsed twice.
type Payload struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
	S  *int64          `json:"s,omitempty"`
	T  string          `json:"t,omitempty"`
}

// Close codes this package sends.
const (
	// CloseNormal ends the session: Discord invalidates it.
	CloseNormal = 1000
	// CloseResumable closes the connection but keeps the session resumable
	// (any code but 1000/1001 does).
	CloseResumable = 4000
)

// CloseAction is what a shard does after the gateway closed with a code.
type CloseAction int

// Close actions.
const (
	// Resume reconnects and resumes the session.
	Resume CloseAction = iota
	// Reidentify reconnects with a new session.
	Reidentify
	// Fatal stops the shard: retrying cannot help.
	Fatal
)

// closeMeanings are Discord's gateway close codes.
var closeMeanings = map[int]struct {
	text   string
	action CloseAction
}{
	4000: {"unknown error", Resume},
	4001: {"unknown opcode", Resume},
	4002: {"decode error", Resume},
	4003: {"not authenticated", Resume},
	4004: {"authentication failed", Fatal},
	4005: {"already authenticated", Resume},
	4007: {"invalid seq", Reidentify},
	4008: {"rate limited", Resume},
	4009: {"session timed out", Reidentify},
	4010: {"invalid shard", Fatal},
	4011: {"sharding required", Fatal},
	4012: {"invalid API version", Fatal},
	4013: {"invalid intents", Fatal},
	4014: {"disallowed intents", Fatal},
}

// ClassifyClose says what to do after a close code, with its meaning.
// Unknown codes resume; 1000/1001 from the server mean a fresh session.
func ClassifyClose(code int) (CloseAction, string) {
	if m, ok := closeMeanings[code]; ok {
		return m.action, m.text
	}
	switch code {
	case 1000, 1001:
		return Reidentify, "closed normally"
	case 1006:
		return Resume, "connection dropped"
	}
	return Resume, fmt.Sprintf("close code %d", code)
}

// ReadyData is the part of READY a shard keeps.
type ReadyData struct {
	SessionID        string `json:"session_id"`
	ResumeGatewayURL string `json:"resume_gateway_url"`
	Guilds           []struct {
		ID string `json:"id"`
	} `json:"guilds"`
	User struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	} `json:"user"`
}

// guildRef reads a guild's id and availability from GUILD_CREATE/DELETE.
type guildRef struct {
	ID          string `json:"id"`
	Unavailable bool   `json:"unavailable"`
}

package discord

import "fmt"

// Close codes a client sends.
const (
	// CloseNormal ends the session: Discord invalidates it.
	CloseNormal = 1000
	// CloseResumable closes the connection but keeps the session resumable
	// (any code but 1000/1001 does).
	CloseResumable = 4000
)

// Gateway close codes Discord sends, named after Discord's table.
const (
	// CloseUnknownError: something went wrong; reconnect and resume.
	CloseUnknownError = 4000
	// CloseUnknownOpcode: the client sent an opcode Discord does not know.
	CloseUnknownOpcode = 4001
	// CloseDecodeError: the client sent a payload Discord cannot decode.
	CloseDecodeError = 4002
	// CloseNotAuthenticated: the client sent a payload before identifying.
	CloseNotAuthenticated = 4003
	// CloseAuthenticationFailed: the token is wrong.
	CloseAuthenticationFailed = 4004
	// CloseAlreadyAuthenticated: the client identified twice.
	CloseAlreadyAuthenticated = 4005
	// CloseInvalidSeq: the sequence sent in Resume is wrong.
	CloseInvalidSeq = 4007
	// CloseRateLimited: the client sent payloads too fast.
	CloseRateLimited = 4008
	// CloseSessionTimedOut: the session timed out; start a new one.
	CloseSessionTimedOut = 4009
	// CloseInvalidShard: the shard in Identify is invalid.
	CloseInvalidShard = 4010
	// CloseShardingRequired: the bot is in too many guilds for its shards.
	CloseShardingRequired = 4011
	// CloseInvalidAPIVersion: the gateway version is invalid.
	CloseInvalidAPIVersion = 4012
	// CloseInvalidIntents: the intents are not a valid bit field.
	CloseInvalidIntents = 4013
	// CloseDisallowedIntents: a privileged intent is not enabled for the
	// application.
	CloseDisallowedIntents = 4014
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

// ClassifyClose says what to do after a close code, with its meaning.
// Unknown codes resume; 1000/1001 from the server mean a fresh session.
func ClassifyClose(code int) (CloseAction, string) {
	switch code {
	case CloseUnknownError:
		return Resume, "unknown error"
	case CloseUnknownOpcode:
		return Resume, "unknown opcode"
	case CloseDecodeError:
		return Resume, "decode error"
	case CloseNotAuthenticated:
		return Resume, "not authenticated"
	case CloseAuthenticationFailed:
		return Fatal, "authentication failed"
	case CloseAlreadyAuthenticated:
		return Resume, "already authenticated"
	case CloseInvalidSeq:
		return Reidentify, "invalid seq"
	case CloseRateLimited:
		return Resume, "rate limited"
	case CloseSessionTimedOut:
		return Reidentify, "session timed out"
	case CloseInvalidShard:
		return Fatal, "invalid shard"
	case CloseShardingRequired:
		return Fatal, "sharding required"
	case CloseInvalidAPIVersion:
		return Fatal, "invalid API version"
	case CloseInvalidIntents:
		return Fatal, "invalid intents"
	case CloseDisallowedIntents:
		return Fatal, "disallowed intents"
	case 1000, 1001:
		return Reidentify, "closed normally"
	case 1006:
		return Resume, "connection dropped"
	}
	return Resume, fmt.Sprintf("close code %d", code)
}

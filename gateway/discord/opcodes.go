package discord

import "fmt"

// Gateway opcodes.
const (
	// OpDispatch (receive) carries an event: t is its name, s its sequence.
	OpDispatch = 0
	// OpHeartbeat (send and receive) keeps the connection alive.
	OpHeartbeat = 1
	// OpIdentify (send) starts a new session.
	OpIdentify = 2
	// OpPresenceUpdate (send) updates the bot's presence.
	OpPresenceUpdate = 3
	// OpVoiceStateUpdate (send) joins, moves or leaves a voice channel.
	OpVoiceStateUpdate = 4
	// OpResume (send) resumes a session after a reconnect.
	OpResume = 6
	// OpReconnect (receive) asks the client to reconnect and resume.
	OpReconnect = 7
	// OpRequestGuildMembers (send) asks for GUILD_MEMBERS_CHUNK events.
	OpRequestGuildMembers = 8
	// OpInvalidSession (receive) says the session is invalid; d says
	// whether it may be resumed.
	OpInvalidSession = 9
	// OpHello (receive) is the first payload, with the heartbeat interval.
	OpHello = 10
	// OpHeartbeatACK (receive) acknowledges a heartbeat.
	OpHeartbeatACK = 11
	// OpRequestSoundboard (send) asks for guilds' soundboard sounds.
	OpRequestSoundboard = 31
	// OpRequestChannelInfo (send) asks for channel information.
	OpRequestChannelInfo = 43
)

// WorkerOpcodes returns the opcodes a worker may send through the broker,
// in ascending order. The gateway owns identify, resume and heartbeat.
func WorkerOpcodes() []int {
	return []int{OpPresenceUpdate, OpVoiceStateUpdate, OpRequestGuildMembers, OpRequestSoundboard, OpRequestChannelInfo}
}

// OpName returns an opcode's name ("presence update"), or "op N" for an
// opcode Discord does not define.
func OpName(op int) string {
	switch op {
	case OpDispatch:
		return "dispatch"
	case OpHeartbeat:
		return "heartbeat"
	case OpIdentify:
		return "identify"
	case OpPresenceUpdate:
		return "presence update"
	case OpVoiceStateUpdate:
		return "voice state update"
	case OpResume:
		return "resume"
	case OpReconnect:
		return "reconnect"
	case OpRequestGuildMembers:
		return "request guild members"
	case OpInvalidSession:
		return "invalid session"
	case OpHello:
		return "hello"
	case OpHeartbeatACK:
		return "heartbeat ack"
	case OpRequestSoundboard:
		return "request soundboard sounds"
	case OpRequestChannelInfo:
		return "request channel info"
	}
	return fmt.Sprintf("op %d", op)
}

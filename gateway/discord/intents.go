package discord

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Intent is one Discord gateway intent bit, or a set of them.
type Intent uint64

// Intent bits, from Discord's docs.
const (
	// IntentGuilds: guild, role, channel and thread events.
	IntentGuilds Intent = 1 << 0
	// IntentGuildMembers (privileged): member add, update and remove.
	IntentGuildMembers Intent = 1 << 1
	// IntentGuildModeration: bans and audit log entries.
	IntentGuildModeration Intent = 1 << 2
	// IntentGuildExpressions: emojis, stickers and soundboard sounds.
	IntentGuildExpressions Intent = 1 << 3
	// IntentGuildIntegrations: integration events.
	IntentGuildIntegrations Intent = 1 << 4
	// IntentGuildWebhooks: webhooks updates.
	IntentGuildWebhooks Intent = 1 << 5
	// IntentGuildInvites: invite create and delete.
	IntentGuildInvites Intent = 1 << 6
	// IntentGuildVoiceStates: voice state updates.
	IntentGuildVoiceStates Intent = 1 << 7
	// IntentGuildPresences (privileged): presence updates.
	IntentGuildPresences Intent = 1 << 8
	// IntentGuildMessages: messages in guilds.
	IntentGuildMessages Intent = 1 << 9
	// IntentGuildMessageReactions: reactions in guilds.
	IntentGuildMessageReactions Intent = 1 << 10
	// IntentGuildMessageTyping: typing in guilds.
	IntentGuildMessageTyping Intent = 1 << 11
	// IntentDirectMessages: direct messages.
	IntentDirectMessages Intent = 1 << 12
	// IntentDirectMessageReactions: reactions in direct messages.
	IntentDirectMessageReactions Intent = 1 << 13
	// IntentDirectMessageTyping: typing in direct messages.
	IntentDirectMessageTyping Intent = 1 << 14
	// IntentMessageContent (privileged): message content in events.
	IntentMessageContent Intent = 1 << 15
	// IntentGuildScheduledEvents: scheduled event events.
	IntentGuildScheduledEvents Intent = 1 << 16
	// IntentAutoModerationConfiguration: auto moderation rule events.
	IntentAutoModerationConfiguration Intent = 1 << 20
	// IntentAutoModerationExecution: auto moderation actions.
	IntentAutoModerationExecution Intent = 1 << 21
	// IntentGuildMessagePolls: poll votes in guilds.
	IntentGuildMessagePolls Intent = 1 << 24
	// IntentDirectMessagePolls: poll votes in direct messages.
	IntentDirectMessagePolls Intent = 1 << 25
)

// PrivilegedIntents must be enabled for the application in Discord's
// developer portal; identifying with them otherwise closes with 4014.
const PrivilegedIntents = IntentGuildMembers | IntentGuildPresences | IntentMessageContent

// ErrUnknownIntent is returned for an intent name Discord does not define.
var ErrUnknownIntent = errors.New("unknown intent")

// namedIntent is one row of Discord's intent table.
type namedIntent struct {
	name string
	bit  Intent
}

// intentTable lists every intent with its name, in bit order.
func intentTable() []namedIntent {
	return []namedIntent{
		{"GUILDS", IntentGuilds},
		{"GUILD_MEMBERS", IntentGuildMembers},
		{"GUILD_MODERATION", IntentGuildModeration},
		{"GUILD_EXPRESSIONS", IntentGuildExpressions},
		{"GUILD_INTEGRATIONS", IntentGuildIntegrations},
		{"GUILD_WEBHOOKS", IntentGuildWebhooks},
		{"GUILD_INVITES", IntentGuildInvites},
		{"GUILD_VOICE_STATES", IntentGuildVoiceStates},
		{"GUILD_PRESENCES", IntentGuildPresences},
		{"GUILD_MESSAGES", IntentGuildMessages},
		{"GUILD_MESSAGE_REACTIONS", IntentGuildMessageReactions},
		{"GUILD_MESSAGE_TYPING", IntentGuildMessageTyping},
		{"DIRECT_MESSAGES", IntentDirectMessages},
		{"DIRECT_MESSAGE_REACTIONS", IntentDirectMessageReactions},
		{"DIRECT_MESSAGE_TYPING", IntentDirectMessageTyping},
		{"MESSAGE_CONTENT", IntentMessageContent},
		{"GUILD_SCHEDULED_EVENTS", IntentGuildScheduledEvents},
		{"AUTO_MODERATION_CONFIGURATION", IntentAutoModerationConfiguration},
		{"AUTO_MODERATION_EXECUTION", IntentAutoModerationExecution},
		{"GUILD_MESSAGE_POLLS", IntentGuildMessagePolls},
		{"DIRECT_MESSAGE_POLLS", IntentDirectMessagePolls},
	}
}

// intentAlias maps older names Discord renamed to the current ones, so
// that existing configurations keep working; other names come back as is.
func intentAlias(name string) string {
	switch name {
	case "GUILD_BANS":
		return "GUILD_MODERATION"
	case "GUILD_EMOJIS", "GUILD_EMOJIS_AND_STICKERS":
		return "GUILD_EXPRESSIONS"
	}
	return name
}

// AllIntents returns every intent bit Discord defines.
func AllIntents() Intent {
	var all Intent
	for _, n := range intentTable() {
		all |= n.bit
	}
	return all
}

// ParseIntents parses a comma list of intent names (case-insensitive, as in
// spec-tacles/gateway's DISCORD_INTENTS). An unknown name is an error that
// names it; nothing is dropped silently.
func ParseIntents(list string) (Intent, error) {
	table := intentTable()
	var out Intent
next:
	for _, raw := range strings.Split(list, ",") {
		name := intentAlias(strings.ToUpper(strings.TrimSpace(raw)))
		if name == "" {
			continue
		}
		for _, n := range table {
			if n.name == name {
				out |= n.bit
				continue next
			}
		}
		return 0, fmt.Errorf("%w %q (known: %s)", ErrUnknownIntent, strings.TrimSpace(raw), strings.Join(IntentNames(AllIntents()), ", "))
	}
	return out, nil
}

// ParseRawIntents parses DISCORD_RAW_INTENTS, a decimal bit field, and
// rejects bits Discord does not define.
func ParseRawIntents(s string) (Intent, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a non-negative integer", s)
	}
	if unknown := Intent(v) &^ AllIntents(); unknown != 0 {
		return 0, fmt.Errorf("%w bits %#x in %d", ErrUnknownIntent, uint64(unknown), v)
	}
	return Intent(v), nil
}

// IntentNames lists the names of the bits set in i, in bit order; bits
// Discord does not define are left out.
func IntentNames(i Intent) []string {
	var names []string
	for _, n := range intentTable() {
		if i&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	return names
}

// String formats the intents as a comma list of names.
func (i Intent) String() string { return strings.Join(IntentNames(i), ",") }

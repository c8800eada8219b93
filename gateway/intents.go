package gateway

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Intent is one Discord gateway intent bit.
type Intent uint64

// ErrUnknownIntent is returned for an intent name Discord does not define.
var ErrUnknownIntent = errors.New("unknown intent")

// intentBits maps each intent name to its bit number, from Discord's docs.
var intentBits = map[string]uint{
	"GUILDS":                        0,
	"GUILD_MEMBERS":                 1,
	"GUILD_MODERATION":              2,
	"GUILD_EXPRESSIONS":             3,
	"GUILD_INTEGRATIONS":            4,
	"GUILD_WEBHOOKS":                5,
	"GUILD_INVITES":                 6,
	"GUILD_VOICE_STATES":            7,
	"GUILD_PRESENCES":               8,
	"GUILD_MESSAGES":                9,
	"GUILD_MESSAGE_REACTIONS":       10,
	"GUILD_MESSAGE_TYPING":          11,
	"DIRECT_MESSAGES":               12,
	"DIRECT_MESSAGE_REACTIONS":      13,
	"DIRECT_MESSAGE_TYPING":         14,
	"MESSAGE_CONTENT":               15,
	"GUILD_SCHEDULED_EVENTS":        16,
	"AUTO_MODERATION_CONFIGURATION": 20,
	"AUTO_MODERATION_EXECUTION":     21,
	"GUILD_MESSAGE_POLLS":           24,
	"DIRECT_MESSAGE_POLLS":          25,
}

// Older names Discord renamed; accepted so existing configurations keep working.
var intentAliases = map[string]string{
	"GUILD_BANS":                "GUILD_MODERATION",
	"GUILD_EMOJIS":              "GUILD_EXPRESSIONS",
	"GUILD_EMOJIS_AND_STICKERS": "GUILD_EXPRESSIONS",
}

// PrivilegedIntents must be enabled for the application in Discord's
// developer portal; identifying with them otherwise closes with 4014.
const PrivilegedIntents = Intent(1<<1 | 1<<8 | 1<<15)

// AllIntents has every intent bit Discord defines.
var AllIntents = func() Intent {
	var all Intent
	for _, bit := range intentBits {
		all |= 1 << bit
	}
	return all
}()

// ParseIntents parses a comma list of intent names (case-insensitive, as in
// spec-tacles/gateway's DISCORD_INTENTS). An unknown name is an error that
// names it; nothing is dropped silently.
func ParseIntents(list string) (Intent, error) {
	var out Intent
	for _, raw := range strings.Split(list, ",") {
		name := strings.ToUpper(strings.TrimSpace(raw))
		if name == "" {
			continue
		}
		if alias, ok := intentAliases[name]; ok {
			name = alias
		}
		bit, ok := intentBits[name]
		if !ok {
			return 0, fmt.Errorf("%w %q (known: %s)", ErrUnknownIntent, strings.TrimSpace(raw), strings.Join(IntentNames(AllIntents), ", "))
		}
		out |= 1 << bit
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
	if unknown := Intent(v) &^ AllIntents; unknown != 0 {
		return 0, fmt.Errorf("%w bits %#x in %d", ErrUnknownIntent, uint64(unknown), v)
	}
	return Intent(v), nil
}

// IntentNames lists the names of the bits set in i, in bit order.
func IntentNames(i Intent) []string {
	type nb struct {
		name string
		bit  uint
	}
	var set []nb
	for name, bit := range intentBits {
		if i&(1<<bit) != 0 {
			set = append(set, nb{name, bit})
		}
	}
	sort.Slice(set, func(a, b int) bool { return set[a].bit < set[b].bit })
	names := make([]string, len(set))
	for k, s := range set {
		names[k] = s.name
	}
	return names
}

// String formats the intents as a comma list of names.
func (i Intent) String() string { return strings.Join(IntentNames(i), ",") }

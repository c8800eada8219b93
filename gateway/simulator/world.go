package simulator

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/discord"
)

// discordTime is the timestamp layout of Discord's JSON (ISO 8601 with
// microseconds and an explicit offset).
const discordTime = "2006-01-02T15:04:05.000000+00:00"

// A user of the simulated world.
type user struct {
	id         string
	username   string
	globalName string
}

// A guild of the simulated world. Immutable after newWorld.
type guild struct {
	id       uint64
	idStr    string
	name     string
	channels []string // text channel ids
	members  []int    // indices into world.users
	joinedAt string
	create   json.RawMessage // GUILD_CREATE d
}

// world is the simulated Discord data: the bot, its application, users and
// guilds. Immutable after newWorld, except for the id counter.
type world struct {
	bot     user
	appID   string
	users   []user
	guilds  []*guild
	texts   []string      // message contents
	counter atomic.Uint64 // increment of generated snowflakes
}

// snowflake builds an id from a millisecond since the Discord epoch and
// the low 22 bits.
func snowflake(ms uint64, low uint64) uint64 {
	return ms<<22 | low&(1<<22-1)
}

// newID returns a fresh snowflake for now.
func (w *world) newID() string {
	ms := uint64(time.Now().UnixMilli() - core.DiscordEpoch)
	n := w.counter.Add(1)
	return strconv.FormatUint(snowflake(ms, 1<<17|n&0xfff), 10)
}

// newWorld generates the simulated data for cfg. Guild ids are spread so
// that guild i belongs to shard i % cfg.Shards; other shard counts still
// spread them because the timestamps are otherwise random.
func newWorld(cfg Config) *world {
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5bd1e995))
	low := func() uint64 { return rng.Uint64N(1 << 22) }
	// Ids from 2016 to 2024, ms since the Discord epoch.
	const (
		start = uint64(365 * 24 * time.Hour / time.Millisecond)
		span  = uint64(8 * 365 * 24 * time.Hour / time.Millisecond)
	)
	w := &world{}
	w.bot = user{id: strconv.FormatUint(snowflake(start+rng.Uint64N(span/8), low()), 10),
		username: "Spectacles Simulator", globalName: "Spectacles"}
	w.appID = w.bot.id
	w.texts = []string{"hello there", "has anyone tried the new build?", "lol", "brb, coffee",
		"can someone review my PR?", "gg", "the gateway is up again", "what's for lunch",
		"check the pinned messages", "that's a great idea, let's do it tomorrow"}
	names := []string{"ada", "brian", "cleo", "dmitri", "elena", "farah", "gus", "hiro",
		"ines", "jonas", "kemal", "lena", "mateo", "nora", "oskar", "priya"}
	for i := range 32 {
		n := names[i%len(names)]
		w.users = append(w.users, user{
			id:         strconv.FormatUint(snowflake(start+rng.Uint64N(span), low()), 10),
			username:   fmt.Sprintf("%s%d", n, i),
			globalName: fmt.Sprintf("%s %d", n, i),
		})
	}
	shards := uint64(cfg.Shards)
	step := span / uint64(max(cfg.Guilds, 1))
	step = max(step, 2*shards+2)
	adjectives := []string{"Cozy", "Busy", "Quiet", "Retro", "Cosmic", "Sunny", "Secret", "Pixel"}
	nouns := []string{"Lounge", "Guild", "Hangout", "Workshop", "Arcade", "Library", "Garden", "Lab"}
	for i := range cfg.Guilds {
		ms := start + uint64(i)*step + rng.Uint64N(step/2)
		ms = ms - ms%shards + uint64(i)%shards
		id := snowflake(ms, low())
		g := &guild{
			id:       id,
			idStr:    strconv.FormatUint(id, 10),
			name:     fmt.Sprintf("%s %s %d", adjectives[rng.IntN(len(adjectives))], nouns[rng.IntN(len(nouns))], i),
			joinedAt: core.SnowflakeTime(id).Add(time.Duration(rng.IntN(1000)) * time.Hour).Format(discordTime),
		}
		for k := range 3 {
			g.channels = append(g.channels, strconv.FormatUint(snowflake(ms+uint64(k+1)*1000, low()), 10))
		}
		for k := range 5 {
			g.members = append(g.members, (i*7+k*3)%len(w.users))
		}
		g.create = w.guildCreate(g, ms, low())
		w.guilds = append(w.guilds, g)
	}
	return w
}

// Payload shapes, reduced to what clients commonly read.
type (
	jsonUser struct {
		ID            string  `json:"id"`
		Username      string  `json:"username"`
		GlobalName    string  `json:"global_name"`
		Discriminator string  `json:"discriminator"`
		Avatar        *string `json:"avatar"`
		Bot           bool    `json:"bot,omitempty"`
		PublicFlags   int     `json:"public_flags"`
	}
	jsonMember struct {
		User                       *jsonUser `json:"user,omitempty"`
		Roles                      []string  `json:"roles"`
		JoinedAt                   string    `json:"joined_at"`
		Nick                       *string   `json:"nick"`
		Avatar                     *string   `json:"avatar"`
		PremiumSince               *string   `json:"premium_since"`
		Deaf                       bool      `json:"deaf"`
		Mute                       bool      `json:"mute"`
		Flags                      int       `json:"flags"`
		Pending                    bool      `json:"pending"`
		CommunicationDisabledUntil *string   `json:"communication_disabled_until"`
	}
	jsonChannel struct {
		ID                   string  `json:"id"`
		Type                 int     `json:"type"`
		Name                 string  `json:"name"`
		Position             int     `json:"position"`
		ParentID             *string `json:"parent_id"`
		Topic                *string `json:"topic,omitempty"`
		NSFW                 bool    `json:"nsfw"`
		LastMessageID        *string `json:"last_message_id,omitempty"`
		RateLimitPerUser     int     `json:"rate_limit_per_user"`
		Bitrate              int     `json:"bitrate,omitempty"`
		UserLimit            int     `json:"user_limit,omitempty"`
		PermissionOverwrites []any   `json:"permission_overwrites"`
		Flags                int     `json:"flags"`
	}
	jsonRole struct {
		ID          string `json:"id"`
		Name        string `json:"name"`
		Color       int    `json:"color"`
		Hoist       bool   `json:"hoist"`
		Position    int    `json:"position"`
		Permissions string `json:"permissions"`
		Managed     bool   `json:"managed"`
		Mentionable bool   `json:"mentionable"`
		Flags       int    `json:"flags"`
	}
)

func (w *world) jsonUser(u user, bot bool) *jsonUser {
	return &jsonUser{ID: u.id, Username: u.username, GlobalName: u.globalName, Discriminator: "0", Bot: bot}
}

func (w *world) member(g *guild, u user, bot bool) jsonMember {
	return jsonMember{User: w.jsonUser(u, bot), Roles: []string{}, JoinedAt: g.joinedAt}
}

// guildCreate renders the GUILD_CREATE d of g.
func (w *world) guildCreate(g *guild, ms, low uint64) json.RawMessage {
	owner := w.users[g.members[0]]
	members := []jsonMember{w.member(g, w.bot, true)}
	for _, m := range g.members {
		members = append(members, w.member(g, w.users[m], false))
	}
	topic := "Talk about anything"
	channels := []jsonChannel{
		{ID: g.channels[0], Type: 0, Name: "general", Position: 0, Topic: &topic, PermissionOverwrites: []any{}},
		{ID: g.channels[1], Type: 0, Name: "random", Position: 1, PermissionOverwrites: []any{}},
		{ID: g.channels[2], Type: 0, Name: "bot-commands", Position: 2, RateLimitPerUser: 5, PermissionOverwrites: []any{}},
		{ID: strconv.FormatUint(snowflake(ms+5000, low), 10), Type: 2, Name: "Voice", Position: 3, Bitrate: 64000, PermissionOverwrites: []any{}},
	}
	d := map[string]any{
		"id":                            g.idStr,
		"name":                          g.name,
		"icon":                          nil,
		"description":                   nil,
		"splash":                        nil,
		"banner":                        nil,
		"owner_id":                      owner.id,
		"afk_channel_id":                nil,
		"afk_timeout":                   300,
		"verification_level":            1,
		"default_message_notifications": 1,
		"explicit_content_filter":       2,
		"mfa_level":                     0,
		"nsfw_level":                    0,
		"premium_tier":                  0,
		"premium_subscription_count":    0,
		"preferred_locale":              "en-US",
		"system_channel_id":             g.channels[0],
		"system_channel_flags":          0,
		"rules_channel_id":              nil,
		"public_updates_channel_id":     nil,
		"application_id":                nil,
		"vanity_url_code":               nil,
		"max_members":                   500000,
		"max_video_channel_users":       25,
		"features":                      []string{},
		"roles": []jsonRole{{ID: g.idStr, Name: "@everyone", Permissions: "1071698660929",
			Position: 0}},
		"emojis":                       []any{},
		"stickers":                     []any{},
		"premium_progress_bar_enabled": false,
		"joined_at":                    g.joinedAt,
		"large":                        false,
		"unavailable":                  false,
		"member_count":                 len(members),
		"voice_states":                 []any{},
		"members":                      members,
		"channels":                     channels,
		"threads":                      []any{},
		"presences":                    []any{},
		"stage_instances":              []any{},
		"guild_scheduled_events":       []any{},
		"soundboard_sounds":            []any{},
	}
	b, err := json.Marshal(d)
	if err != nil {
		panic(fmt.Sprintf("simulator: rendering GUILD_CREATE: %v", err)) // static shapes: cannot happen
	}
	return b
}

// guildsFor returns the guilds shard id of count owns.
func (w *world) guildsFor(id, count int) []*guild {
	var out []*guild
	for _, g := range w.guilds {
		if core.ShardID(g.id, count) == id {
			out = append(out, g)
		}
	}
	return out
}

// Synthetic event payloads.
type (
	jsonMessage struct {
		ID              string     `json:"id"`
		Type            int        `json:"type"`
		ChannelID       string     `json:"channel_id"`
		GuildID         string     `json:"guild_id"`
		Author          *jsonUser  `json:"author"`
		Member          jsonMember `json:"member"`
		Content         string     `json:"content"`
		Timestamp       string     `json:"timestamp"`
		EditedTimestamp *string    `json:"edited_timestamp"`
		TTS             bool       `json:"tts"`
		MentionEveryone bool       `json:"mention_everyone"`
		Mentions        []any      `json:"mentions"`
		MentionRoles    []string   `json:"mention_roles"`
		Attachments     []any      `json:"attachments"`
		Embeds          []any      `json:"embeds"`
		Components      []any      `json:"components"`
		Pinned          bool       `json:"pinned"`
		Flags           int        `json:"flags"`
		Nonce           string     `json:"nonce,omitempty"`
	}
	jsonTyping struct {
		ChannelID string     `json:"channel_id"`
		GuildID   string     `json:"guild_id"`
		UserID    string     `json:"user_id"`
		Timestamp int64      `json:"timestamp"`
		Member    jsonMember `json:"member"`
	}
	jsonEmoji struct {
		ID   *string `json:"id"`
		Name string  `json:"name"`
	}
	jsonReaction struct {
		UserID          string     `json:"user_id"`
		ChannelID       string     `json:"channel_id"`
		MessageID       string     `json:"message_id"`
		GuildID         string     `json:"guild_id"`
		MessageAuthorID string     `json:"message_author_id"`
		Member          jsonMember `json:"member"`
		Emoji           jsonEmoji  `json:"emoji"`
		Burst           bool       `json:"burst"`
		Type            int        `json:"type"`
	}
	jsonPresence struct {
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		GuildID      string            `json:"guild_id"`
		Status       string            `json:"status"`
		Activities   []any             `json:"activities"`
		ClientStatus map[string]string `json:"client_status"`
	}
	jsonMessageDelete struct {
		ID        string `json:"id"`
		ChannelID string `json:"channel_id"`
		GuildID   string `json:"guild_id"`
	}
)

// synthetic is one generated dispatch: its payload with and without message
// content (nil when the event has none).
type synthetic struct {
	t         string
	need      discord.Intent // intent a session must have to receive it
	d         []byte
	noContent []byte // d for sessions without MESSAGE_CONTENT, or nil
}

// generate renders one synthetic event of type t in guild g.
func (w *world) generate(rng *rand.Rand, t string, g *guild) (synthetic, error) {
	need, _ := eventIntent(t)
	s := synthetic{t: t, need: need}
	u := w.users[g.members[rng.IntN(len(g.members))]]
	ch := g.channels[rng.IntN(len(g.channels))]
	now := time.Now().UTC()
	var err error
	switch t {
	case "MESSAGE_CREATE":
		m := jsonMessage{
			ID: w.newID(), ChannelID: ch, GuildID: g.idStr, Author: w.jsonUser(u, false),
			Member: w.member(g, u, false), Content: w.texts[rng.IntN(len(w.texts))],
			Timestamp: now.Format(discordTime), Mentions: []any{}, MentionRoles: []string{},
			Attachments: []any{}, Embeds: []any{}, Components: []any{},
			Nonce: strconv.FormatUint(rng.Uint64()>>1, 10),
		}
		m.Member.User = nil
		if s.d, err = json.Marshal(m); err != nil {
			break
		}
		m.Content = ""
		s.noContent, err = json.Marshal(m)
	case "MESSAGE_DELETE":
		s.d, err = json.Marshal(jsonMessageDelete{ID: w.newID(), ChannelID: ch, GuildID: g.idStr})
	case "TYPING_START":
		mem := w.member(g, u, false)
		s.d, err = json.Marshal(jsonTyping{ChannelID: ch, GuildID: g.idStr, UserID: u.id, Timestamp: now.Unix(), Member: mem})
	case "MESSAGE_REACTION_ADD":
		emojis := []string{"👍", "🎉", "😂", "❤️", "👀"}
		s.d, err = json.Marshal(jsonReaction{UserID: u.id, ChannelID: ch, MessageID: w.newID(), GuildID: g.idStr,
			MessageAuthorID: w.users[g.members[0]].id, Member: w.member(g, u, false),
			Emoji: jsonEmoji{Name: emojis[rng.IntN(len(emojis))]}})
	case "PRESENCE_UPDATE":
		statuses := []string{"online", "idle", "dnd", "offline"}
		st := statuses[rng.IntN(len(statuses))]
		p := jsonPresence{GuildID: g.idStr, Status: st, Activities: []any{}, ClientStatus: map[string]string{}}
		p.User.ID = u.id
		if st != "offline" {
			p.ClientStatus["desktop"] = st
		}
		s.d, err = json.Marshal(p)
	default:
		return s, fmt.Errorf("simulator: no generator for %q", t)
	}
	if err != nil {
		return s, fmt.Errorf("simulator: rendering %s: %w", t, err)
	}
	return s, nil
}

package tui

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/discord"
)

// Before the Publish view publishes or calls, it asks the broker which
// groups consume the event: when some do, the operator confirms (each of
// them handles the message, a call's reply comes from one); when none
// does, it publishes at once. Data for a packet event (SEND, a shard id)
// is checked as the Send view checks a packet.

// publishCheckMsg is who consumes a publish's event.
type publishCheckMsg struct {
	act    publishAction
	groups []string
	err    error
}

func (publishCheckMsg) target() kind { return kPublish }

// checkConsumers looks up the groups of a's event.
func checkConsumers(sh *shared, a publishAction) tea.Cmd {
	ins := sh.backend.Inspector()
	return func() tea.Msg {
		msg := publishCheckMsg{act: a}
		if ins == nil {
			return msg // nothing tells: publish as asked
		}
		ctx, cancel := sh.ctx()
		defer cancel()
		groups, err := ins.Groups(ctx, a.event)
		msg.err = err
		for _, g := range groups {
			msg.groups = append(msg.groups, g.Name)
		}
		return msg
	}
}

// question is the confirmation of a publish or call that msg found
// consumers for, or "" when none does and nothing failed.
func (msg publishCheckMsg) question() string {
	verb := "Publish to"
	if msg.act.call {
		verb = "Call"
	}
	switch {
	case msg.err != nil:
		return fmt.Sprintf("%s %s? Which groups consume it is unknown (%v).", verb, msg.act.event, msg.err)
	case len(msg.groups) == 0:
		return ""
	}
	who := fmt.Sprintf("%s consume it (%s)", plural(len(msg.groups), "group"), strings.Join(msg.groups, ", "))
	if len(msg.groups) == 1 {
		who = "group " + msg.groups[0] + " consumes it"
	}
	if msg.act.call {
		return fmt.Sprintf("%s %s? %s; the first reply wins.", verb, msg.act.event, who)
	}
	return fmt.Sprintf("%s %s? %s: each handles it.", verb, msg.act.event, who)
}

// checkPacketEvent checks data for a packet event as the Send view does:
// SEND is {"guild_id": SNOWFLAKE, "packet": PACKET}, a shard id's data is
// a PACKET, and a PACKET is one a worker may send (discord.ValidatePacket).
// shards is the bot's shard count when known (0: unknown), which a shard
// id must be below.
func checkPacketEvent(event string, data any, shards int) error {
	if !gateway.IsPacketEvent(event) {
		return nil
	}
	packet := data
	if event == gateway.SendEvent {
		m, ok := data.(map[string]any)
		if !ok {
			return errors.New(`SEND data is {"guild_id": "…", "packet": {"op": …, "d": …}}`)
		}
		guild, _ := m["guild_id"].(string)
		if _, err := core.ParseSnowflake(guild); err != nil {
			return fmt.Errorf("SEND guild_id: %v", err)
		}
		if packet, ok = m["packet"]; !ok {
			return errors.New(`SEND data needs a "packet": {"op": …, "d": …}`)
		}
	} else if n, _ := strconv.Atoi(event); shards > 0 && n >= shards {
		return fmt.Errorf("shard %d is not in 0..%d", n, shards-1)
	}
	raw, err := json.Marshal(core.JSONValue(packet))
	if err != nil {
		return fmt.Errorf("%s packet: %w", event, err)
	}
	if _, err := discord.ValidatePacket(raw); err != nil {
		return fmt.Errorf("%s packet: %w", event, err)
	}
	return nil
}

// knownShardCount is the local gateway's shard count, 0 when none runs or
// it does not know yet.
func knownShardCount(sh *shared) int {
	if g := sh.backend.Gateway().Gateway; g != nil {
		return g.ShardCount()
	}
	return 0
}

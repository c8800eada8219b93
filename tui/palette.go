package tui

import (
	"fmt"
	"strings"
	"time"
)

type special int

const (
	cmdNav special = iota
	cmdQuit
	cmdHelp
	cmdRefresh
	cmdNone
)

// command is a parsed palette line.
type command struct {
	navMsg
	special  special
	interval time.Duration
}

// paletteCommand describes one ":" command for the hint and the help.
type paletteCommand struct {
	names []string
	args  string
	help  string
}

var paletteCommands = []paletteCommand{
	{[]string{"overview", "o", "home"}, "", "node, broker, shards and warnings"},
	{[]string{"streams", "s", "st"}, "", "every stream"},
	{[]string{"groups", "g", "gr"}, "STREAM", "consumer groups of a stream"},
	{[]string{"pending", "p", "pel"}, "STREAM [GROUP]", "pending entries of a group"},
	{[]string{"tail", "t", "follow"}, "STREAM...", "live tail of streams"},
	{[]string{"dlq", "deadletters"}, "EVENT", "tail the dead letters of EVENT"},
	{[]string{"publish", "pub", "call"}, "[EVENT]", "publish or call"},
	{[]string{"send", "route"}, "[GUILD_ID]", "SEND-route a packet to a shard"},
	{[]string{"shards", "sh", "gateway"}, "", "shard health and control"},
	{[]string{"services", "svc", "presence"}, "", "service instances that announce themselves"},
	{[]string{"buckets", "ratelimits", "proxy"}, "", "the REST proxy's rate-limit buckets and recent 429s"},
	{[]string{"refresh", "interval"}, "[DURATION]", "set the refresh interval, or pause/resume"},
	{[]string{"help", "h"}, "", "keys of this view"},
	{[]string{"quit", "q", "exit"}, "", "leave the console"},
}

func commandNames() []string {
	out := make([]string, 0, len(paletteCommands))
	for _, c := range paletteCommands {
		name := c.names[0]
		if c.args != "" {
			name += " " + c.args
		}
		out = append(out, name)
	}
	return out
}

// paletteHint shows the commands that match what has been typed.
func paletteHint(text string) string {
	word, _, _ := strings.Cut(strings.TrimSpace(text), " ")
	var out []string
	for _, c := range paletteCommands {
		for _, n := range c.names {
			if strings.HasPrefix(n, strings.ToLower(word)) {
				s := c.names[0]
				if c.args != "" {
					s += " " + c.args
				}
				out = append(out, s)
				break
			}
		}
	}
	if len(out) == 0 {
		return "no such command"
	}
	if len(out) == 1 {
		for _, c := range paletteCommands {
			if strings.HasPrefix(out[0], c.names[0]) {
				return out[0] + " — " + c.help
			}
		}
	}
	return strings.Join(out, " · ")
}

// parseCommand reads a palette line such as "pending MESSAGE_CREATE audit".
func parseCommand(text string) (command, error) {
	fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(text), ":"))
	if len(fields) == 0 {
		return command{special: cmdNone}, nil
	}
	name, args := strings.ToLower(fields[0]), fields[1:]
	var found *paletteCommand
	for i := range paletteCommands {
		for _, n := range paletteCommands[i].names {
			if n == name {
				found = &paletteCommands[i]
			}
		}
	}
	if found == nil {
		return command{}, fmt.Errorf("unknown command %q (try :help)", fields[0])
	}
	c := command{}
	switch found.names[0] {
	case "overview":
		c.to = kOverview
	case "streams":
		c.to = kStreams
	case "groups":
		c.to = kGroups
		if len(args) > 0 {
			c.stream = args[0]
		}
	case "pending":
		c.to = kPending
		if len(args) > 0 {
			c.stream = args[0]
		}
		if len(args) > 1 {
			c.group = args[1]
		}
	case "tail":
		c.to = kTail
		for _, a := range args {
			for s := range strings.SplitSeq(a, ",") {
				if s != "" {
					c.streams = append(c.streams, s)
				}
			}
		}
	case "dlq":
		if len(args) != 1 {
			return command{}, fmt.Errorf("usage: dlq EVENT")
		}
		c.to = kTail
		ev := args[0]
		if _, ok := dlqSource(ev); !ok {
			ev = dlqOf(ev)
		}
		c.streams = []string{ev}
	case "publish":
		c.to = kPublish
		if len(args) > 0 {
			c.event = args[0]
		}
		if len(args) > 1 {
			c.data = strings.Join(args[1:], " ")
		}
	case "send":
		c.to = kSend
		if len(args) > 0 {
			c.data = args[0]
		}
	case "shards":
		c.to = kShards
	case "services":
		c.to = kServices
	case "buckets":
		c.to = kBuckets
	case "refresh":
		c.special = cmdRefresh
		if len(args) > 0 {
			d, err := time.ParseDuration(args[0])
			if err != nil || d <= 0 {
				return command{}, fmt.Errorf("refresh: %q is not a duration (e.g. 5s)", args[0])
			}
			c.interval = d
		}
	case "help":
		c.special = cmdHelp
	case "quit":
		c.special = cmdQuit
	}
	if c.special != cmdNav {
		c.to = -1
	}
	return c, nil
}

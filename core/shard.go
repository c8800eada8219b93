package core

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrInvalidSnowflake is returned for a Discord id that is not a positive
// decimal 64-bit integer.
var ErrInvalidSnowflake = errors.New("invalid snowflake")

// DiscordEpoch is the first millisecond of 2015, the zero of snowflake time.
const DiscordEpoch = 1420070400000

// ParseSnowflake parses a Discord id written as a decimal string.
func ParseSnowflake(s string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty", ErrInvalidSnowflake)
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: %q", ErrInvalidSnowflake, s)
	}
	return id, nil
}

// SnowflakeTime returns the moment a snowflake was created.
func SnowflakeTime(id uint64) time.Time {
	return time.UnixMilli(int64(id>>22) + DiscordEpoch).UTC()
}

// ShardID returns the shard that receives a guild's events:
// (guild_id >> 22) % shardCount. A shardCount below 1 counts as 1, and direct
// messages (guild id 0) go to shard 0.
func ShardID(guildID uint64, shardCount int) int {
	if shardCount <= 1 {
		return 0
	}
	return int((guildID >> 22) % uint64(shardCount))
}

package gateway

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ErrInvalidShardIDs is returned for a malformed DISCORD_SHARD_IDS value.
var ErrInvalidShardIDs = errors.New("invalid shard ids")

// ParseShardIDs parses a list of shard ids and inclusive ranges such as
// "0-7,12" into a sorted list without duplicates. An empty string yields
// nil, meaning every shard.
func ParseShardIDs(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		from, err := strconv.Atoi(strings.TrimSpace(lo))
		if err != nil || from < 0 {
			return nil, fmt.Errorf("%w: %q in %q", ErrInvalidShardIDs, part, s)
		}
		to := from
		if isRange {
			to, err = strconv.Atoi(strings.TrimSpace(hi))
			if err != nil || to < from {
				return nil, fmt.Errorf("%w: %q in %q", ErrInvalidShardIDs, part, s)
			}
		}
		if to-from > 1<<16 {
			return nil, fmt.Errorf("%w: range %q is too large", ErrInvalidShardIDs, part)
		}
		for id := from; id <= to; id++ {
			seen[id] = true
		}
	}
	ids := make([]int, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids, nil
}

// ResolveShardIDs checks ids against the shard count; nil ids mean all
// shards 0..count-1.
func ResolveShardIDs(ids []int, count int) ([]int, error) {
	if count < 1 {
		return nil, fmt.Errorf("%w: shard count %d", ErrInvalidShardIDs, count)
	}
	if ids == nil {
		all := make([]int, count)
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	for _, id := range ids {
		if id >= count {
			return nil, fmt.Errorf("%w: shard %d is not below the shard count %d", ErrInvalidShardIDs, id, count)
		}
	}
	return ids, nil
}

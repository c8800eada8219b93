// Package gateway holds Discord gateway shards for a Spectacles node: it
// publishes each dispatch's d under its event name t to the broker, and
// sends packets that workers publish (to a shard id, or as SEND with a
// guild id) back to Discord through the right shard.
package gateway

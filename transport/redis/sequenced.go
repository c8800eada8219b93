package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

var _ core.SequencedPublisher = (*Broker)(nil)

// MarkTTL is how long a publish mark outlives its last update: far longer
// than Discord keeps a session resumable.
const MarkTTL = 24 * time.Hour

// sequencedScript publishes a batch of sequenced messages. KEYS holds, per
// message, its mark ("" for none) and its stream; ARGV holds the mark TTL in seconds,
// the trimming strategy ("", "MAXLEN" or "MINID") and its threshold, then
// per message its session, seq and encoded payload. A mark holds
// "session:seq"; a message without a mark is always added. The reply is {ids, err}: ids holds, per message handled,
// the new entry's id or "" for a message skipped as already published; err
// is false or the error of the GET or XADD that stopped the batch. Every mark the
// script advanced is written before it returns, also on that error, so
// that the entries it added are never added again.
var sequencedScript = goredis.NewScript(`
local ttl, strategy, threshold = ARGV[1], ARGV[2], ARGV[3]
local marks, dirty, ids = {}, {}, {}
local function flush()
  for k, m in pairs(dirty) do
    redis.call('SET', k, m[1] .. ':' .. m[2], 'EX', ttl)
  end
end
for i = 1, #KEYS / 2 do
  local mk, stream = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 3 + 3 * (i - 1)
  local session, seq = ARGV[a + 1], tonumber(ARGV[a + 2])
  local m = marks[mk]
  if mk == '' then
    m = false
  elseif m == nil then
    m = false
    local v = redis.pcall('GET', mk)
    if type(v) == 'table' and v.err then
      flush()
      return {ids, v.err}
    end
    if v then
      local s, q = string.match(v, '^(.*):(%-?%d+)$')
      if s then m = {s, tonumber(q)} end
    end
    marks[mk] = m
  end
  if m and m[1] == session and seq <= m[2] then
    ids[i] = ''
  else
    local r
    if strategy == '' then
      r = redis.pcall('XADD', stream, '*', 'data', ARGV[a + 3])
    else
      r = redis.pcall('XADD', stream, strategy, '~', threshold, '*', 'data', ARGV[a + 3])
    end
    if type(r) == 'table' and r.err then
      flush()
      return {ids, r.err}
    end
    ids[i] = r
    if mk ~= '' then
      m = {session, seq}
      marks[mk] = m
      dirty[mk] = m
    end
  end
end
flush()
return {ids, false}
`)

// PublishSequenced implements core.SequencedPublisher: one Lua script
// (EVALSHA, EVAL when the server does not know it yet) checks each
// message's mark, XADDs it with the broker's MaxLen or MinIDAge trimming
// and advances the mark, so that the batch is atomic and a retry adds
// nothing twice. A mark is a string key holding "session:seq" that
// expires MarkTTL after its last update. On a Redis Cluster, where one
// script cannot reach every key of a batch, it returns an error wrapping
// core.ErrUnsupported. An error that may have come after the script was
// sent wraps core.ErrPublishUncertain.
func (b *Broker) PublishSequenced(ctx context.Context, msgs []core.SequencedOutgoing) ([]string, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	if b.cluster {
		return nil, fmt.Errorf("redis: sequenced publish on a cluster: %w", core.ErrUnsupported)
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, 2*len(msgs))
	args := make([]any, 3, 3+3*len(msgs))
	args[0] = strconv.Itoa(int(MarkTTL / time.Second))
	args[1], args[2] = b.cfg.trim(time.Now())
	for _, m := range msgs {
		if m.Event == "" {
			return nil, errors.New("redis: publish: event name is empty")
		}
		raw, err := b.cfg.Codec.Marshal(m.Data)
		if err != nil {
			return nil, fmt.Errorf("redis: publish %s: %w", m.Event, err)
		}
		keys = append(keys, m.Mark, m.Event)
		args = append(args, m.Session, strconv.FormatInt(m.Seq, 10), raw)
	}
	res, err := sequencedScript.Run(ctx, b.client, keys, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("redis: publish %d sequenced messages: %w", len(msgs), publishError(err))
	}
	ids, serr, perr := sequencedReply(res, len(msgs))
	if perr != nil {
		// The script ran: what it published is marked, so a retry is safe.
		return nil, fmt.Errorf("redis: publish %d sequenced messages: %w: %w", len(msgs), core.ErrPublishUncertain, perr)
	}
	if serr != "" {
		return ids, fmt.Errorf("redis: publish %s: %s", msgs[len(ids)].Event, serr)
	}
	return ids, nil
}

// sequencedReply reads the script's reply {ids, err}.
func sequencedReply(res []any, n int) (ids []string, scriptErr string, err error) {
	if len(res) != 2 {
		return nil, "", fmt.Errorf("unexpected reply of %d elements", len(res))
	}
	raw, ok := res[0].([]any)
	if !ok || len(raw) > n {
		return nil, "", fmt.Errorf("unexpected reply %T", res[0])
	}
	ids = make([]string, len(raw))
	for i, v := range raw {
		if ids[i], ok = v.(string); !ok {
			return nil, "", fmt.Errorf("unexpected id %T", v)
		}
	}
	if res[1] != nil {
		if scriptErr, ok = res[1].(string); !ok {
			return nil, "", fmt.Errorf("unexpected error %T", res[1])
		}
		if len(ids) == n {
			return nil, "", errors.New("an error after every message")
		}
		return ids, scriptErr, nil
	}
	if len(ids) != n {
		return nil, "", fmt.Errorf("%d ids for %d messages", len(ids), n)
	}
	return ids, "", nil
}

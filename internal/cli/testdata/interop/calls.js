// calls.js PEER EVENT N: makes N calls on EVENT with @discordjs/brokers
// ("djs") or @spectacles/brokers ("sjs") as the caller, PARALLEL (10) at a
// time, and prints one JSON line: {"peer", "calls", "answered", "wrong",
// "errors"}. REDIS_URL is host:port or a redis:// URL.
// A call is answered when a reply equal to the expected one arrives within
// CALL_TIMEOUT_MS (default 5000, the peers' own default). EXPECT=echo
// expects the call's data back; else EXPECT holds the expected reply JSON.
'use strict';
const Redis = require('ioredis');
const util = require('node:util');

const [peer, event, nText] = process.argv.slice(2);
const n = Number(nText);
const timeout = Number(process.env.CALL_TIMEOUT_MS || 5000);
const expect = process.env.EXPECT || 'echo';
const url = process.env.REDIS_URL || '127.0.0.1:6379';
const parallel = Number(process.env.PARALLEL || 10);

function client() {
  return url.includes('://') ? new Redis(url) : new Redis(Number(url.split(':')[1] || 6379), url.split(':')[0]);
}

async function main() {
  const redis = client();
  let call, close, clients;
  if (peer === 'djs') {
    const { RPCRedisBroker } = require('@discordjs/brokers');
    const b = new RPCRedisBroker(redis, { group: 'interop-caller' });
    call = (data) => b.call(event, data, timeout);
    close = () => { redis.disconnect(); b.streamReadClient.disconnect(); };
    clients = [redis, b.streamReadClient];
  } else if (peer === 'sjs') {
    const { Redis: RedisBroker } = require('@spectacles/brokers');
    const b = new RedisBroker('interop-caller', redis);
    call = (data) => b.call(event, data, { timeout });
    close = () => b.disconnect();
    clients = [redis, b._rpcReadClient, b._streamReadClient];
  } else {
    throw new Error(`unknown peer ${peer}`);
  }
  // Both peers subscribe to a call's reply channel on a connection of
  // their own (redis.duplicate()) that they never wait for. A call made
  // before that connection is ready sends its SUBSCRIBE ahead of ioredis's
  // ready check, which ioredis then refuses in subscriber mode ("Connection
  // in subscriber mode, only subscriber commands may be used"): it drops
  // the connection, and the calls already subscribed never get their
  // replies (they time out). A bug of the peers (ioredis's ready check
  // and their not waiting for it), not of the responder: wait until every
  // connection is ready, as a long-running service is by its first call.
  await Promise.all(clients.map((c) => c.status === 'ready' ? null : new Promise((resolve) => c.once('ready', resolve))));
  let answered = 0, wrong = 0;
  const errors = {};
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      const data = { i, text: `call ${i} é` };
      const want = expect === 'echo' ? data : JSON.parse(expect);
      try {
        const got = await call(data);
        if (util.isDeepStrictEqual(got, want)) answered++;
        else { wrong++; errors[`wrong reply ${JSON.stringify(got)}`] = true; }
      } catch (e) {
        errors[String(e && e.message || e)] = true;
      }
    }
  }
  await Promise.all(Array.from({ length: parallel }, worker));
  process.stdout.write(JSON.stringify({ peer, calls: n, answered, wrong, errors: Object.keys(errors).slice(0, 5) }) + '\n');
  close();
}

main().catch((e) => { console.error(e && e.stack || e); process.exit(1); });

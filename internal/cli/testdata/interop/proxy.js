// proxy.js MODE N: sends N message creates (all at once) and one reaction
// through the Spectacles REST proxy and prints one JSON line: {"mode",
// "calls", "ok", "errors"}.
//   MODE sjs: @spectacles/proxy's Client over @spectacles/brokers' Redis
//             broker (event REQUEST; REDIS_URL is host:port or a URL).
//   MODE djs: @discordjs/rest with api PROXY_URL (http://ADDR/api).
// TOKEN is the bot token, CHANNEL and MESSAGE snowflakes.
'use strict';
const Redis = require('ioredis');

const [mode, nText] = process.argv.slice(2);
const n = Number(nText);
const token = process.env.TOKEN;
const channel = process.env.CHANNEL;
const message = process.env.MESSAGE;
const url = process.env.REDIS_URL || '127.0.0.1:6379';
const emoji = encodeURIComponent('👍');

async function main() {
  let create, react, close;
  if (mode === 'sjs') {
    const redis = url.includes('://') ? new Redis(url) : new Redis(Number(url.split(':')[1] || 6379), url.split(':')[0]);
    const { Redis: RedisBroker, Broker } = require('@spectacles/brokers');
    // @spectacles/proxy's Client calls without a timeout, so the broker's
    // default (5 s) applies; a loaded CI machine can take longer for all
    // twelve at once.
    Broker.DEFAULT_EXPIRATION = 30e3;
    const { Client } = require('@spectacles/proxy');
    const broker = new RedisBroker('interop-proxy-caller', redis);
    const client = new Client(broker, token);
    const unwrap = (reply, want) => {
      if (reply.status !== 0) throw new Error(`proxy status ${reply.status}: ${reply.body}`);
      if (reply.body.status !== want) throw new Error(`HTTP ${reply.body.status}`);
      return reply.body;
    };
    create = async (i) => {
      const body = unwrap(await client.post(`/channels/${channel}/messages`, { content: `m${i}` }), 200);
      const msg = JSON.parse(Buffer.from(body.body).toString());
      if (msg.content !== `m${i}`) throw new Error(`content ${msg.content}`);
      if (!body.headers['x-ratelimit-bucket']) throw new Error('no x-ratelimit-bucket header');
    };
    react = async () => unwrap(await client.put(`/channels/${channel}/messages/${message}/reactions/${emoji}/@me`), 204);
    close = () => broker.disconnect();
  } else if (mode === 'djs') {
    const { REST } = require('@discordjs/rest');
    const rest = new REST({ api: process.env.PROXY_URL, version: '10' }).setToken(token);
    create = async (i) => {
      const msg = await rest.post(`/channels/${channel}/messages`, { body: { content: `m${i}` } });
      if (msg.content !== `m${i}`) throw new Error(`content ${msg.content}`);
    };
    react = () => rest.put(`/channels/${channel}/messages/${message}/reactions/${emoji}/@me`);
    close = () => {};
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  let ok = 0;
  const errors = {};
  const run = async (f) => {
    try { await f(); ok++; } catch (e) { errors[String(e && e.message || e)] = true; }
  };
  await Promise.all(Array.from({ length: n }, (_, i) => run(() => create(i))));
  await run(react);
  process.stdout.write(JSON.stringify({ mode, calls: n + 1, ok, errors: Object.keys(errors).slice(0, 5) }) + '\n');
  close();
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });

// bench-discordjs.js: the publish -> consume -> ack rate of @discordjs/brokers'
// PubSubRedisBroker, for the side-by-side comparison in
// ../bench/side-by-side.sh. It publishes N payloads of SIZE bytes from
// INFLIGHT concurrent publish loops (each awaits its publish, as a bot's
// handlers would; 64 by default, as `spectacles bench` runs 64 publishers),
// consumes them in the same process with one broker subscribed with a group,
// whose handler awaits ack() for every message, and prints one JSON line:
//
//   {"prog":"discordjs-brokers","n","bytes","inflight","max_chunk","block_timeout_ms",
//    "publish_per_s","end_to_end_per_s","client_cpu_us_per_msg"}
//
// End to end runs from the first publish until the last ack() resolved (its
// XACK answered). The broker runs with its defaults (maxChunk 10: XREADGROUP
// COUNT 10; blockTimeout 5000 ms; msgpack encoding; one XACK per message on
// the client that also publishes). The stream and group are named per run
// and deleted at the end.
//
// Usage: NODE_PATH=<node_modules> node bench-discordjs.js [redis-url]
//        [-n 100000] [-size 1024] [-inflight 64] [-maxchunk 10] [-autopipeline 0]
// The URL may also come from REDIS_URL; N, SIZE, INFLIGHT, MAX_CHUNK and
// AUTOPIPELINE from the environment. -maxchunk (the broker's maxChunk option,
// its XREADGROUP COUNT) and -autopipeline 1 (ioredis's enableAutoPipelining,
// off by default: one socket write per command) are there to see how much
// the defaults bound the broker; the side-by-side runner leaves both at the
// defaults.
'use strict';

const { randomBytes } = require('node:crypto');
const { PubSubRedisBroker, DefaultRedisBrokerOptions } = require('@discordjs/brokers');
const { Redis } = require('ioredis');

function parseArgs(argv) {
	const opts = {
		url: process.env.REDIS_URL || 'redis://127.0.0.1:6379/0',
		n: Number(process.env.N || 100000),
		size: Number(process.env.SIZE || 1024),
		inflight: Number(process.env.INFLIGHT || 64),
		maxchunk: Number(process.env.MAX_CHUNK || DefaultRedisBrokerOptions.maxChunk),
		autopipeline: Number(process.env.AUTOPIPELINE || 0),
	};
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i];
		const flag = arg.replace(/^--?/, '');
		if (flag === arg) {
			opts.url = arg;
			continue;
		}
		let [key, value] = flag.split('=', 2);
		if (value === undefined) {
			value = argv[++i];
		}
		if (!(key in opts) || value === undefined) {
			throw new Error(`unknown or incomplete flag ${arg}`);
		}
		opts[key] = key === 'url' ? value : Number(value);
	}
	if (opts.autopipeline !== 0 && opts.autopipeline !== 1) {
		throw new Error(`autopipeline must be 0 or 1, not ${opts.autopipeline}`);
	}
	for (const key of ['n', 'size', 'inflight', 'maxchunk']) {
		if (!Number.isInteger(opts[key]) || opts[key] < 1) {
			throw new Error(`${key} must be a positive integer, not ${opts[key]}`);
		}
	}
	return opts;
}

async function main() {
	const opts = parseArgs(process.argv.slice(2));
	const suffix = `${process.pid}_${Date.now()}_${randomBytes(4).toString('hex')}`;
	const stream = `discordjsbench_${suffix}`;
	const group = `g_${suffix}`;
	const payload = randomBytes(opts.size);

	const admin = new Redis(opts.url);
	const broker = new PubSubRedisBroker(
		new Redis(opts.url, { enableAutoPipelining: opts.autopipeline === 1 }),
		{ group, maxChunk: opts.maxchunk },
	);

	let acked = 0;
	let bad = 0;
	let finishing = false;
	let resolveDone;
	let rejectDone;
	const done = new Promise((resolve, reject) => {
		resolveDone = resolve;
		rejectDone = reject;
	});
	done.catch(() => {}); // a failure while publishing is reported by the await below
	broker.on('error', (error) => {
		if (!finishing) {
			rejectDone(error);
		}
	});
	broker.on(stream, async ({ data, ack }) => {
		if (!data || data.length !== opts.size) {
			bad++;
		}
		try {
			await ack();
		} catch (error) {
			rejectDone(error);
			return;
		}
		if (++acked === opts.n) {
			resolveDone(process.hrtime.bigint());
		}
	});
	// Fail instead of hanging when no ack arrives for 30 s.
	let lastAcked = -1;
	const stall = setInterval(() => {
		if (acked === lastAcked) {
			rejectDone(new Error(`stalled: ${acked} of ${opts.n} messages acked`));
		}
		lastAcked = acked;
	}, 30000);
	await broker.subscribe([stream]); // creates the group (MKSTREAM) and starts reading
	await new Promise((resolve) => setTimeout(resolve, 50));

	const cpu0 = process.cpuUsage();
	const start = process.hrtime.bigint();
	let next = 0;
	const publisher = async () => {
		while (next < opts.n) {
			next++;
			await broker.publish(stream, payload);
		}
	};
	await Promise.all(Array.from({ length: Math.min(opts.inflight, opts.n) }, publisher));
	const published = process.hrtime.bigint();
	const end = await done;
	const cpu = process.cpuUsage(cpu0);
	clearInterval(stall);

	finishing = true;
	const seconds = (t) => Number(t - start) / 1e9;
	const result = {
		prog: 'discordjs-brokers',
		n: opts.n,
		bytes: opts.size,
		inflight: opts.inflight,
		max_chunk: opts.maxchunk,
		autopipeline: opts.autopipeline === 1,
		block_timeout_ms: DefaultRedisBrokerOptions.blockTimeout,
		publish_per_s: Math.round((opts.n / seconds(published)) * 10) / 10,
		end_to_end_per_s: Math.round((opts.n / seconds(end)) * 10) / 10,
		client_cpu_us_per_msg: Math.round(((cpu.user + cpu.system) / opts.n) * 100) / 100,
	};
	if (bad > 0) {
		result.bad_payloads = bad;
	}
	process.stdout.write(`${JSON.stringify(result)}\n`);

	// destroy() removes the consumer and the group (xcleangroup) and closes
	// both connections; the read blocked in XREADGROUP then fails, which the
	// error handler above ignores.
	await broker.destroy();
	await admin.del(stream);
	admin.disconnect();
	if (bad > 0) {
		process.exitCode = 1;
	}
}

main().catch((error) => {
	process.stderr.write(`bench-discordjs: ${error && error.stack ? error.stack : error}\n`);
	process.exit(1);
});

// A discovery store outage, then an empty store, with a Node.js Moleculer 0.15 node in the
// cluster, for the Redis discoverer. The transporter has a Redis server of its
// own that stays up; only the discovery store goes away (for three heartbeat timeouts) and comes
// back empty. Rust nodes keep calling the JS node all along (relay.call): no Rust node may
// evict a live node, and no call may fail.
"use strict";
const net = require("net");
const { spawn } = require("child_process");
const { sleep, until, freePort, startRust } = require("./harness");

function listening(what, port) {
	return until(what, () => new Promise(resolve => {
		const sock = net.connect(port, "127.0.0.1", () => { sock.end(); resolve(true); });
		sock.on("error", () => resolve(false));
	}), 15000);
}

/// A redis-server on a port of its own that can be stopped and started again, empty.
async function restartableRedis() {
	const port = await freePort();
	const server = { name: "Redis", port, url: `redis://127.0.0.1:${port}`, child: null };
	server.start = async () => {
		server.child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
		await listening("redis-server", port);
	};
	server.stop = () => { if (server.child) server.child.kill("SIGKILL"); server.child = null; };
	server.rustBeats = async () => {
		const Redis = require("ioredis");
		const probe = new Redis(server.url);
		try { return (await probe.keys("MOL-DSCVR-BEAT:rust-*")).length; } finally { probe.disconnect(); }
	};
	await server.start();
	return server;
}

async function scenario(check, assert, store) {
	const { ServiceBroker } = require("moleculer");
	console.log(`\n${store.name} discoverer outage with Moleculer ${ServiceBroker.MOLECULER_VERSION}: Redis transporter up, discovery store down then empty`);
	const bus = await restartableRedis();
	const transport = { rust: bus.url, rustDiscoverer: store.url };
	const ids = ["rust-1", "rust-2"];
	const rust = {};
	for (const id of ids) rust[id] = startRust(id, transport, "JSON", "5");
	const js = new ServiceBroker({
		nodeID: "js-1",
		logger: false,
		heartbeatInterval: 1,
		heartbeatTimeout: 3,
		transporter: bus.url,
		registry: { discoverer: store.url }
	});
	js.createService({ name: "jsmath", actions: { add: ctx => ctx.params.a + ctx.params.b } });
	try {
		await js.start();
		const everyoneSees = async () => {
			for (const id of ids) {
				const list = await js.call("$node.list", {}, { nodeID: id }).catch(() => []);
				const up = new Set(list.filter(n => n.available).map(n => n.id));
				if (!["js-1", ...ids].every(n => up.has(n))) return false;
			}
			return true;
		};
		await until("every node to see every other", everyoneSees, 30000);

		await check("a discovery outage and an empty restart: no live node evicted, no call failed", async () => {
			let running = true;
			let ok = 0;
			const rustFailures = [];
			const jsFailures = [];
			const evictions = [];
			// Each Rust node calls the JS node on our behalf, 8 calls in flight per node.
			const loops = ids.flatMap(id => Array.from({ length: 8 }, async (_, i) => {
				let n = 0;
				while (running) {
					n++;
					try {
						const res = await js.call("relay.call", { action: "jsmath.add", params: { a: i, b: n } }, { nodeID: id });
						if (res.data === i + n) ok++;
						else rustFailures.push(`wrong answer ${JSON.stringify(res)}`);
					} catch (err) {
						const where = err.nodeID || "js-1";
						(where.startsWith("rust") ? rustFailures : jsFailures).push(`${err.name} from ${where}: ${err.message}`);
						await sleep(20);
					}
				}
			}));
			// What each Rust node holds as alive, every 100 ms.
			const watch = (async () => {
				while (running) {
					for (const id of ids) {
						const list = await js.call("$node.list", {}, { nodeID: id }).catch(() => null);
						if (!list) continue;
						for (const n of list) {
							if (n.id !== id && !n.available && ["js-1", ...ids].includes(n.id)) evictions.push(`${id} lost ${n.id}`);
						}
					}
					await sleep(100);
				}
			})();
			await sleep(1000);
			const before = ok;
			store.stop();
			await sleep(9000); // three heartbeat timeouts without the discovery store
			const during = ok - before;
			await store.start(); // empty
			const back = Date.now();
			const rebeat = await until("both Rust nodes to write their beat keys again", async () =>
				(await store.rustBeats()) === ids.length, 10000, 10);
			await sleep(6000 - (Date.now() - back)); // two heartbeat timeouts after it is back
			running = false;
			await Promise.all([...loops, watch]);
			console.log(`       (the Rust nodes' beat keys were back ${rebeat} ms after the empty store)`);
			console.log(`       (${ok} calls answered, ${during} of them during the outage; failed: ${rustFailures.length} on the Rust side, ${jsFailures.length} on the JS side; evictions seen by Rust nodes: ${evictions.length})`);
			if (jsFailures.length) console.log(`       (JS side, not ours: ${JSON.stringify(jsFailures.slice(0, 3))})`);
			assert(evictions.length === 0, `evictions: ${JSON.stringify([...new Set(evictions)])}`);
			assert(rustFailures.length === 0, `failed calls: ${JSON.stringify(rustFailures.slice(0, 5))}`);
			assert(during > 100, `only ${during} calls during the outage`);
			if (store.name === "Redis") assert(rebeat < 1500, `beat keys back after ${rebeat} ms`);
		});
	} finally {
		await js.stop().catch(() => {});
		for (const id of ids) rust[id].kill("SIGKILL");
		await sleep(300);
		bus.stop();
		store.stop();
	}
}

// Only Redis: Moleculer's etcd3 discoverer throws an unhandled error from its client while etcd
// is down, so a JS node cannot sit through an etcd outage.
async function run(check, assert) {
	await scenario(check, assert, await restartableRedis());
}

module.exports = { run };

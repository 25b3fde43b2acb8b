// Fault tolerance against Node.js Moleculer 0.15: a JS caller with retries off keeps 24 calls in
// flight while each of three Rust nodes in turn is stopped with SIGTERM and started again (no
// call may fail), and a Rust node's circuit breaker events reach a JS subscriber.
"use strict";
const { sleep, until, exited, freePort, startRust, redisTransport } = require("./harness");

async function tcpFor(ids) {
	const ports = await Promise.all(ids.map(freePort));
	const urls = ids.map((id, i) => `127.0.0.1:${ports[i]}/${id}`);
	return { name: "TCP", rust: "tcp://" + urls.join(","), js: { type: "TCP", options: { urls, udpDiscovery: false } }, stop() {} };
}

async function scenario(check, assert, transport) {
	const { ServiceBroker, Errors } = require("moleculer");
	console.log(`\nFault tolerance with Moleculer ${ServiceBroker.MOLECULER_VERSION}: ${transport.name} transporter, JSON`);
	const breakerEnv = {
		MOL_CIRCUIT_BREAKER__ENABLED: "true",
		MOL_CIRCUIT_BREAKER__MIN_REQUEST_COUNT: "3",
		MOL_CIRCUIT_BREAKER__THRESHOLD: "0.5"
	};
	const ids = ["rust-1", "rust-2", "rust-3"];
	const start = id => startRust(id, transport, "JSON", "5", { env: breakerEnv });
	const rust = {};
	for (const id of ids) rust[id] = start(id);
	const breakerEvents = [];
	const js = new ServiceBroker({
		nodeID: "js-caller",
		logger: false,
		heartbeatInterval: 1,
		heartbeatTimeout: 3,
		transporter: transport.js
	});
	js.createService({
		name: "jsfail",
		actions: {
			boom() {
				throw new Errors.MoleculerError("js broke", 500, "JS_BROKE");
			}
		},
		events: {
			"$circuit-breaker.*"(ctx) {
				breakerEvents.push({ event: ctx.eventName, data: ctx.params, from: ctx.nodeID });
			}
		}
	});
	try {
		await js.start();
		const serving = id => js.call("whoami.node", {}, { nodeID: id }).then(n => n === id, () => false);
		await until("every Rust node to serve", async () => (await Promise.all(ids.map(serving))).every(Boolean), 30000);

		await check("rolling restart of the Rust nodes: a JS caller without retries loses no call", async () => {
			let running = true;
			let ok = 0;
			const failures = [];
			const loops = Array.from({ length: 24 }, async (_, i) => {
				let n = 0;
				while (running) {
					n++;
					try {
						const sum = await js.call("math.add", { a: i, b: n });
						if (sum === i + n) ok++;
						else failures.push(`wrong answer ${sum}`);
					} catch (err) {
						failures.push(`${err.name} from ${err.nodeID || "the caller"}: ${err.message}`);
					}
				}
			});
			await sleep(300);
			for (const id of ids) {
				const before = ok;
				rust[id].kill("SIGTERM");
				await exited(rust[id]);
				rust[id] = start(id);
				const back = await until(`${id} to serve again`, () => serving(id), 20000);
				console.log(`       (${id} stopped and restarted; served again ${back} ms after its restart)`);
				await sleep(300);
				assert(ok > before, "calls kept flowing");
			}
			running = false;
			await Promise.all(loops);
			console.log(`       (${ok} calls answered, ${failures.length} failed)`);
			assert(failures.length === 0, `failed calls: ${JSON.stringify(failures.slice(0, 5))}`);
			assert(ok > 300, `only ${ok} calls`);
		});

		await check("JS receives a Rust node's $circuit-breaker.opened event", async () => {
			breakerEvents.length = 0;
			for (let i = 0; i < 4; i++) {
				await js.call("relay.call", { action: "jsfail.boom", params: {} }, { nodeID: "rust-1" }).catch(() => {});
			}
			await until("the breaker event", () => breakerEvents.some(e => e.event === "$circuit-breaker.opened"), 5000);
			const opened = breakerEvents.find(e => e.event === "$circuit-breaker.opened");
			assert(opened.from === "rust-1", `from ${opened.from}`);
			assert(opened.data.nodeID === "js-caller" && opened.data.action === "jsfail.boom" && opened.data.service === "jsfail", JSON.stringify(opened.data));
			assert(opened.data.failures >= 3 && opened.data.rate === 1, JSON.stringify(opened.data));
		});
	} finally {
		await js.stop().catch(() => {});
		for (const id of ids) rust[id].kill("SIGKILL");
		await sleep(300);
		transport.stop();
	}
}

async function run(check, assert) {
	const only = process.env.INTEROP_ONLY;
	if (only !== "redis") await scenario(check, assert, await tcpFor(["rust-1", "rust-2", "rust-3", "js-caller"]));
	if (only !== "tcp") await scenario(check, assert, await redisTransport());
}

module.exports = { run };

// Mixed clusters of Node.js Moleculer nodes and Rust nodes: TCP, Redis, and the Redis and etcd3 discoverers.
// Usage: RUST_NODE_BIN=<path to the `node` example> node run.js
// Prints one line per check and ends with "N passed, M failed"; exits 1 on any failure.
"use strict";
const { sleep, until, startRust, startJsProcess, rustSees, jsSees, tcpTransport, redisTransport, etcdTransport } = require("./harness");

let passed = 0;
let failed = 0;

async function check(label, fn) {
	try {
		await fn();
		passed++;
		console.log(`  ok   ${label}`);
	} catch (err) {
		failed++;
		console.log(`  FAIL ${label}: ${err && err.message ? err.message : err}`);
	}
}

function assert(cond, message) {
	if (!cond) throw new Error(message);
}

async function scenario(pkg, protocol, serializer, transport) {
	const { ServiceBroker, Errors } = require(pkg);
	console.log(`\nMoleculer ${ServiceBroker.MOLECULER_VERSION} (protocol ${protocol}) with Rust nodes, ${transport.name} transporter, ${serializer}`);
	const rust = startRust("rust-1", transport, serializer, protocol);
	const jsReceived = [];
	const js = new ServiceBroker({
		nodeID: "js-1",
		logger: false,
		serializer,
		heartbeatInterval: 1,
		heartbeatTimeout: 3,
		// Balance events between the JS and Rust mailers instead of keeping them local.
		registry: { preferLocal: false, discoverer: transport.jsDiscoverer || "Local" },
		transporter: transport.js
	});
	js.createService({
		name: "jsmath",
		actions: {
			add(ctx) {
				return ctx.params.a + ctx.params.b;
			},
			fail() {
				throw new Errors.MoleculerClientError("js failed", 422, "JS_FAILED", { f: 1 });
			},
			meta(ctx) {
				ctx.meta.fromJs = true;
				return { seen: ctx.meta, caller: ctx.nodeID };
			}
		},
		events: {
			"user.created": { group: "mailer", handler(ctx) { jsReceived.push({ event: ctx.eventName, data: ctx.params, from: ctx.nodeID }); } },
			"order.**"(ctx) { jsReceived.push({ event: ctx.eventName, data: ctx.params, from: ctx.nodeID }); }
		}
	});
	const others = [];
	try {
		await js.start();
		const joinMs = await until(
			"discovery",
			async () =>
				js.registry.hasService("relay") &&
				(await js.call("$node.services", { skipInternal: true }, { nodeID: "rust-1" })).some(s => s.name === "jsmath"),
			20000
		);
		await check(`JS and Rust discover each other (${joinMs} ms after JS start)`, async () => {
			assert(js.registry.getServiceList({}).some(s => s.name === "math"), "JS sees math");
			assert(await rustSees(js, "rust-1", "js-1"), "Rust sees js-1");
		});
		await check("JS calls Rust: math.add, greeter.hello", async () => {
			const sum = await js.call("math.add", { a: 2, b: 3 });
			assert(sum === 5, `math.add answered ${JSON.stringify(sum)}`);
			const hello = await js.call("greeter.hello", { name: "JS" });
			assert(hello === "Hello JS", `greeter.hello answered ${JSON.stringify(hello)}`);
		});
		await check("a Rust error reaches JS with name, code, type and data", async () => {
			try {
				await js.call("math.div", { a: 1, b: 0 });
				throw new Error("no error");
			} catch (err) {
				assert(err.name === "MoleculerClientError", `name ${err.name}`);
				assert(err.code === 422 && err.type === "DIVISION_BY_ZERO", `code ${err.code} type ${err.type}`);
				assert(err.data && err.data.b === 0, `data ${JSON.stringify(err.data)}`);
				assert(err.nodeID === "rust-1", `nodeID ${err.nodeID}`);
			}
		});
		await check("Rust calls JS (relay.call -> jsmath.add)", async () => {
			const res = await js.call("relay.call", { action: "jsmath.add", params: { a: 4, b: 5 } });
			assert(res.data === 9, `answered ${JSON.stringify(res)}`);
		});
		await check("meta travels JS -> Rust -> JS and back", async () => {
			const res = await js.call("relay.call", { action: "jsmath.meta", params: {} }, { meta: { user: { id: 7 } } });
			assert(res.data.seen.user.id === 7, `JS saw meta ${JSON.stringify(res.data.seen)}`);
			assert(res.data.caller === "rust-1", `JS saw caller node ${res.data.caller}`);
			assert(res.meta.fromJs === true && res.meta.user.id === 7, `Rust got meta back ${JSON.stringify(res.meta)}`);
		});
		await check("a JS error reaches Rust and comes back intact", async () => {
			try {
				await js.call("relay.call", { action: "jsmath.fail", params: {} });
				throw new Error("no error");
			} catch (err) {
				assert(err.name === "MoleculerClientError" && err.code === 422 && err.type === "JS_FAILED", `${err.name} ${err.code} ${err.type}`);
				assert(err.data && err.data.f === 1, `data ${JSON.stringify(err.data)}`);
			}
		});
		await check("balanced events from JS split between the JS and Rust mailer groups", async () => {
			const before = (await js.call("mailer.received", {}, { nodeID: "rust-1" })).length;
			jsReceived.length = 0;
			for (let i = 0; i < 10; i++) await js.emit("user.created", { id: i });
			await until("10 deliveries", async () => jsReceived.length + (await js.call("mailer.received", {}, { nodeID: "rust-1" })).length - before >= 10, 5000);
			const rustGot = (await js.call("mailer.received", {}, { nodeID: "rust-1" })).length - before;
			assert(rustGot + jsReceived.length === 10, `rust ${rustGot} + js ${jsReceived.length} != 10`);
			assert(rustGot > 0 && jsReceived.length > 0, `rust ${rustGot}, js ${jsReceived.length}: not balanced`);
		});
		await check("a JS broadcast reaches the Rust handler", async () => {
			await js.broadcast("user.created", { id: "broadcast" });
			await until("the broadcast", async () => (await js.call("mailer.received", {}, { nodeID: "rust-1" })).some(e => e.id === "broadcast"), 5000);
		});
		await check("Rust emits and broadcasts to JS", async () => {
			jsReceived.length = 0;
			await js.call("relay.emit", { event: "order.paid", params: { id: 1 } });
			await js.call("relay.emit", { event: "order.created", params: { id: 2 }, broadcast: true });
			await until("both events", () => jsReceived.length >= 2, 5000);
			assert(jsReceived.every(e => e.from === "rust-1"), `from ${jsReceived.map(e => e.from)}`);
			assert(jsReceived.some(e => e.event === "order.paid") && jsReceived.some(e => e.event === "order.created"), JSON.stringify(jsReceived));
		});
		await check("a stopped JS node is noticed by Rust", async () => {
			const js2 = new ServiceBroker({ nodeID: "js-2", logger: false, serializer, heartbeatInterval: 1, heartbeatTimeout: 3, registry: { discoverer: transport.jsDiscoverer || "Local" }, transporter: transport.js });
			others.push(js2);
			await js2.start();
			await until("Rust to see js-2", () => rustSees(js, "rust-1", "js-2"), 30000);
			await js2.stop();
			const ms = await until("Rust to drop js-2", async () => !(await rustSees(js, "rust-1", "js-2")), 10000);
			console.log(`       (js-2 dropped ${ms} ms after its stop)`);
		});
		await check("a killed JS node is noticed by Rust", async () => {
			const child = await startJsProcess(pkg, "js-3", serializer, transport);
			others.push({ stop: async () => child.kill("SIGKILL") });
			const seen = await until("Rust to see js-3", () => rustSees(js, "rust-1", "js-3"), 30000);
			console.log(`       (js-3 seen by Rust ${seen} ms after its start)`);
			child.kill("SIGKILL");
			const ms = await until("Rust to drop js-3", async () => !(await rustSees(js, "rust-1", "js-3")), 15000);
			console.log(`       (js-3 dropped ${ms} ms after SIGKILL)`);
		});
		await check("a stopped Rust node is noticed by JS", async () => {
			const rust2 = startRust("rust-2", transport, serializer, protocol);
			others.push({ stop: async () => rust2.kill("SIGKILL") });
			await until("JS to see rust-2", () => jsSees(js, "rust-2"), 15000);
			rust2.kill("SIGTERM");
			const ms = await until("JS to drop rust-2", () => !jsSees(js, "rust-2"), 10000);
			console.log(`       (rust-2 dropped ${ms} ms after SIGTERM)`);
		});
		await check("a killed Rust node is noticed by JS", async () => {
			const rust2 = startRust("rust-2", transport, serializer, protocol);
			others.push({ stop: async () => rust2.kill("SIGKILL") });
			await until("JS to see the new rust-2", () => jsSees(js, "rust-2"), 15000);
			rust2.kill("SIGKILL");
			const ms = await until("JS to drop rust-2", () => !jsSees(js, "rust-2"), 15000);
			console.log(`       (rust-2 dropped ${ms} ms after SIGKILL)`);
		});
	} finally {
		for (const o of others) await o.stop().catch(() => {});
		await js.stop().catch(() => {});
		rust.kill("SIGKILL");
		await sleep(300);
		transport.stop();
	}
}

// Killing redis-server after a scenario can leave an ioredis client of a stopped broker with
// queued commands; that teardown error is expected, any other is not.
process.on("uncaughtException", err => {
	if (err && /Connection is closed/.test(err.message)) return;
	console.error(err);
	process.exit(1);
});

(async () => {
	const combos = [
		["moleculer", "5", "JSON"],
		["moleculer", "5", "MsgPack"],
		["moleculer-014", "4", "JSON"],
		["moleculer-014", "4", "MsgPack"]
	];
	const only = process.env.INTEROP_ONLY; // "tcp" or "redis" to run one transporter
	if (only !== "redis") for (const [pkg, protocol, serializer] of combos) await scenario(pkg, protocol, serializer, await tcpTransport());
	// Redis transporter with Local discovery (heartbeats over Redis pub/sub).
	if (only !== "tcp") {
		await scenario("moleculer", "5", "JSON", await redisTransport());
		await scenario("moleculer", "5", "MsgPack", await redisTransport());
		await scenario("moleculer", "5", "JSON", await redisTransport(true));
	}
	if (only !== "tcp" && only !== "redis") await scenario("moleculer", "5", "JSON", await etcdTransport());
	await require("./fault-tolerance").run(check, assert);
	if (only !== "tcp") await require("./redis-outage").run(check, assert);
	if (only !== "tcp") await require("./cache").run(check, assert);
	if (!only) await require("./transmit").run(check, assert);
	if (only !== "redis") await require("./tracing").run(check, assert);
	if (only !== "redis") await require("./cli").run(check, assert);
	console.log(`\n${passed} passed, ${failed} failed`);
	process.exit(failed === 0 ? 0 : 1);
})();

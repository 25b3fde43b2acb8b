// Moleculer 0.15's transmit middlewares against the Rust node's `[transmit]` settings, over
// Redis and over TCP: with the same key both ways work (encrypted, and compressed above the
// threshold), and a node with another key, JS or Rust, is kept out in both directions.
"use strict";
const { sleep, until, freePort, startRust, rustSees, jsSees, redisTransport } = require("./harness");

const PASSWORD = "a-32-byte-password-for-aes-256!!";
const IV = "an-iv-of-16-byte";
const WRONG = "another-32-byte-password-000000!";

function rustEnv(password, method) {
	const env = { MOL_TRANSMIT__COMPRESSION__METHOD: method, MOL_TRANSMIT__COMPRESSION__THRESHOLD: "100" };
	if (password) Object.assign(env, { MOL_TRANSMIT__ENCRYPTION__PASSWORD: password, MOL_TRANSMIT__ENCRYPTION__IV: IV });
	return env;
}

async function tcpPair() {
	const ports = await Promise.all([1, 2, 3, 4].map(freePort));
	const urls = [`127.0.0.1:${ports[0]}/rust-tx`, `127.0.0.1:${ports[1]}/js-tx`, `127.0.0.1:${ports[2]}/js-wrong`, `127.0.0.1:${ports[3]}/rust-wrong`];
	return { name: "TCP", rust: "tcp://" + urls.join(","), js: { type: "TCP", options: { urls, udpDiscovery: false } }, stop() {} };
}

/// With `encrypted`, aes-256-cbc then `method`; else `method` alone.
async function scenario(check, assert, transport, encrypted, method) {
	const { ServiceBroker, Middlewares } = require("moleculer");
	console.log(`\nTransmit middlewares: Moleculer ${ServiceBroker.MOLECULER_VERSION} and Rust, ${transport.name}, ${encrypted ? "encryption + " : ""}${method} compression`);
	const middlewares = password => [
		...(encrypted ? [Middlewares.Transmit.Encryption(password, "aes-256-cbc", IV)] : []),
		Middlewares.Transmit.Compression({ method, threshold: 100 })
	];
	const rust = startRust("rust-tx", transport, "JSON", "5", { env: rustEnv(encrypted && PASSWORD, method) });
	const js = new ServiceBroker({ nodeID: "js-tx", logger: false, transporter: transport.js, middlewares: middlewares(PASSWORD) });
	js.createService({ name: "jsecho", actions: { say: ctx => ({ said: ctx.params.text, by: "js-tx" }) } });
	const wrongJs = new ServiceBroker({ nodeID: "js-wrong", logger: false, transporter: transport.js, middlewares: middlewares(WRONG) });
	let wrongRust;
	try {
		await js.start();
		await until("the Rust node to see the JS node", () => rustSees(js, "rust-tx", "js-tx"), 30000);
		// Over TCP the node can be known a moment before its services: wait for the action too.
		await until("the Rust node to know jsecho.say", () =>
			js.call("$node.actions", { onlyAvailable: true }, { nodeID: "rust-tx" })
				.then(list => list.some(a => a.name === "jsecho.say"))
				.catch(() => false), 30000);

		await check("JS calls Rust through them (small and large packets)", async () => {
			assert((await js.call("math.add", { a: 2, b: 3 })) === 5, "a small call");
			const name = "n".repeat(5000);
			const hello = await js.call("greeter.hello", { name });
			assert(hello === `Hello ${name}`, "a large call, compressed both ways");
		});

		await check("Rust calls JS through them", async () => {
			const text = "t".repeat(3000);
			const { data: answer } = await js.call("relay.call", { action: "jsecho.say", params: { text } });
			assert(answer.said === text && answer.by === "js-tx", JSON.stringify(answer).slice(0, 80));
		});

		if (!encrypted) return;
		await check("a JS node with another key is kept out, both ways", async () => {
			await wrongJs.start();
			await sleep(2500);
			assert(!(await rustSees(js, "rust-tx", "js-wrong")), "Rust must not see js-wrong");
			assert(!jsSees(wrongJs, "rust-tx"), "js-wrong must not see Rust");
			await wrongJs.stop();
		});

		await check("a Rust node with another key is kept out, both ways", async () => {
			wrongRust = startRust("rust-wrong", transport, "JSON", "5", { env: rustEnv(WRONG, method) });
			await sleep(2500);
			assert(!jsSees(js, "rust-wrong"), "JS must not see rust-wrong");
			const list = await js.call("$node.list", {}, { nodeID: "rust-tx" });
			assert(!list.some(n => n.id === "rust-wrong" && n.available), "rust-tx must not see rust-wrong");
		});
	} finally {
		if (wrongRust) wrongRust.kill("SIGKILL");
		await wrongJs.stop().catch(() => {});
		await js.stop().catch(() => {});
		rust.kill("SIGKILL");
		await sleep(300);
		transport.stop();
	}
}

async function run(check, assert) {
	await scenario(check, assert, await redisTransport(), true, "deflate");
	await scenario(check, assert, await tcpPair(), true, "deflate");
	await scenario(check, assert, await redisTransport(), false, "gzip");
	await scenario(check, assert, await tcpPair(), false, "deflateRaw");
}

module.exports = { run };

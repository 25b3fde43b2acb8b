// A Redis cache shared by a Node.js Moleculer 0.15 node and a Rust node: the Rust node caches
// `cached.square` and `cached.profile` (keys `n`, and `id`, `name`, `#tenant`) in Redis under
// the keys the JS cacher computes for the same calls, reads values the JS cacher wrote, and
// sees a JS `clean`.
"use strict";
const { until, startRust, rustSees, redisTransport } = require("./harness");

async function run(check, assert) {
	const { ServiceBroker } = require("moleculer");
	console.log(`\nA shared Redis cache: Moleculer ${ServiceBroker.MOLECULER_VERSION} and a Rust node, Redis transporter and cacher`);
	const transport = await redisTransport();
	const url = transport.js;
	const rust = startRust("rust-cache", transport, "JSON", "5", {
		env: { MOL_NAMESPACE: "shared", MOL_CACHER: url }
	});
	const js = new ServiceBroker({
		nodeID: "js-cache",
		namespace: "shared",
		logger: false,
		transporter: url,
		cacher: { type: "Redis", options: { redis: url } }
	});
	const runs = () => js.call("cached.runs");
	// The key the JS cacher makes for a call of `action` with these params and meta.
	const keyOf = (action, keys, params, meta = {}) =>
		js.cacher.getCacheKey({ name: action }, { keys }, { params, meta, headers: {} });
	try {
		await js.start();
		await until("the Rust node to see the JS node", () => rustSees(js, "rust-cache", "js-cache"), 30000);
		await js.waitForServices(["cached"], 10000);

		await check("Rust stores a result under the key JS computes, as JSON JS reads", async () => {
			assert((await js.call("cached.square", { n: 5 })) === 25, "5 squared");
			const key = keyOf("cached.square", ["n"], { n: 5 });
			assert(key === "cached.square:5", key);
			const cached = await js.cacher.get(key);
			assert(cached === 25, `JS read ${JSON.stringify(cached)} under ${key}`);
		});

		await check("keys with strings and meta match JS's (id, name, #tenant)", async () => {
			const params = { id: 7, name: "bob" };
			const meta = { tenant: "acme" };
			const answer = await js.call("cached.profile", params, { meta });
			const key = keyOf("cached.profile", ["id", "name", "#tenant"], params, meta);
			assert(key === 'cached.profile:7|"bob"|"acme"', key);
			const cached = await js.cacher.get(key);
			assert(JSON.stringify(cached) === JSON.stringify(answer), `JS read ${JSON.stringify(cached)}`);
		});

		await check("Rust answers from a value JS wrote, without running its handler", async () => {
			const before = await runs();
			await js.cacher.set(keyOf("cached.square", ["n"], { n: 6 }), 4242, 30);
			const answer = await js.call("cached.square", { n: 6 });
			assert(answer === 4242, `answered ${answer}`);
			assert((await runs()) === before, "the handler did not run");
		});

		await check("a clean from JS is seen by Rust: the next call runs the handler", async () => {
			assert((await js.call("cached.square", { n: 5 })) === 25);
			const before = await runs();
			await js.cacher.clean("cached.**");
			assert((await js.cacher.get("cached.square:5")) == null, "cleaned");
			assert((await js.call("cached.square", { n: 5 })) === 25);
			assert((await runs()) === before + 1, "the handler ran again");
			assert((await js.call("cached.square", { n: 6 })) === 36, "the JS-written 4242 is gone too");
		});
	} finally {
		await js.stop().catch(() => {});
		rust.kill("SIGKILL");
		transport.stop();
	}
}

module.exports = { run };

// Local call and emit throughput of Moleculer (Node.js), measured the same way as the Rust
// bench (crates/moleculer-broker/benches/local.rs): sequential awaits for a fixed time.
"use strict";
const { ServiceBroker } = require("moleculer");

const WARMUP_MS = 300;
const MEASURE_MS = 2000;

async function measure(name, op) {
	const warmEnd = Date.now() + WARMUP_MS;
	while (Date.now() < warmEnd) for (let i = 0; i < 256; i++) await op();
	let n = 0;
	const start = process.hrtime.bigint();
	const limit = BigInt(MEASURE_MS) * 1000000n;
	while (process.hrtime.bigint() - start < limit) {
		for (let i = 0; i < 256; i++) await op();
		n += 256;
	}
	const secs = Number(process.hrtime.bigint() - start) / 1e9;
	const ops = n / secs;
	console.log(`${name.padEnd(34)} 1 thread(s) ${(ops / 1e6).toFixed(2).padStart(7)} M ops/s ${(1e9 / ops).toFixed(1).padStart(7)} ns/op per thread`);
}

(async () => {
	// The memory cacher wraps only `bench.cachedAdd`, as in the Rust bench.
	const broker = new ServiceBroker({ nodeID: "bench", logger: false, cacher: "Memory" });
	let events = 0;
	broker.createService({
		name: "bench",
		actions: {
			echo() { return null; },
			add(ctx) { return ctx.params.a + ctx.params.b; },
			cachedAdd: { cache: { keys: ["a", "b"] }, handler(ctx) { return ctx.params.a + ctx.params.b; } }
		},
		events: { "bench.tick"() { events++; } }
	});
	await broker.start();
	console.log(`moleculer ${ServiceBroker.MOLECULER_VERSION} on node ${process.version}`);
	await measure("local call (untyped, no params)", () => broker.call("bench.echo"));
	await measure("local call (typed params {a,b})", () => broker.call("bench.add", { a: 1, b: 2 }));
	await measure("local call, cache hit (keys a, b)", () => broker.call("bench.cachedAdd", { a: 1, b: 2 }));
	await measure("local emit (one handler)", () => broker.emit("bench.tick", null));
	await broker.stop();
})();

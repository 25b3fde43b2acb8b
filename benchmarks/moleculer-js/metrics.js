// Moleculer (Node.js) calls with metrics off and on, measured as the Rust bench does
// (crates/moleculer-broker/benches/metrics.rs): local calls, and remote calls over the Fake
// transporter at 1 and 100 in flight, in 5 alternating rounds; prints the medians.
// Metrics on means Moleculer's defaults with no reporter (collecting, not exporting).
"use strict";
const { ServiceBroker } = require("moleculer");
const measure = require("./measure");

const ROUNDS = 5;
const MS = 1500;

const metrics = on => (on ? { enabled: true, reporter: [] } : false);

async function local(on) {
	const broker = new ServiceBroker({ nodeID: "bench", logger: false, metrics: metrics(on) });
	broker.createService({ name: "bench", actions: { echo(ctx) { return ctx.params; } } });
	await broker.start();
	for (let i = 0; i < 100000; i++) await broker.call("bench.echo", null);
	let n = 0;
	const start = process.hrtime.bigint();
	const limit = BigInt(MS) * 1000000n;
	while (process.hrtime.bigint() - start < limit) {
		for (let i = 0; i < 256; i++) await broker.call("bench.echo", null);
		n += 256;
	}
	const rate = n / (Number(process.hrtime.bigint() - start) / 1e9);
	await broker.stop();
	return rate;
}

async function remote(on, inFlight) {
	const opts = { transporter: "Fake", logger: false, namespace: "bench-metrics", metrics: metrics(on) };
	const a = new ServiceBroker({ ...opts, nodeID: "caller" });
	const b = new ServiceBroker({ ...opts, nodeID: "callee" });
	b.createService({ name: "bench", actions: { echo(ctx) { return ctx.params; } } });
	await b.start();
	await a.start();
	await a.waitForServices("bench");
	const [rate] = await measure(a, inFlight, MS);
	await a.stop();
	await b.stop();
	return rate;
}

const median = v => v.sort((x, y) => x - y)[Math.floor(v.length / 2)];

async function compare(name, run) {
	const off = [], on = [];
	for (let round = 0; round < ROUNDS; round++) {
		if (round % 2 === 0) {
			off.push(await run(false));
			on.push(await run(true));
		} else {
			on.push(await run(true));
			off.push(await run(false));
		}
	}
	const [o, m] = [median(off), median(on)];
	console.log(`${name.padEnd(34)} off ${o.toFixed(0).padStart(11)}/s   on ${m.toFixed(0).padStart(11)}/s   overhead ${((o - m) / o * 100).toFixed(1).padStart(5)} %`);
}

(async () => {
	console.log(`moleculer ${ServiceBroker.MOLECULER_VERSION} on node ${process.version}: calls with metrics off and on, median of ${ROUNDS} alternating rounds`);
	await compare("local call, 1 thread", local);
	for (const inFlight of [1, 100]) await compare(`remote call JSON, ${inFlight} in flight`, on => remote(on, inFlight));
})();

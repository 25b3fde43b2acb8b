// Shared by the Node.js benchmarks: calls `bench.echo` from `inFlight` concurrent sequential
// callers for `ms`, after a warm-up; returns [calls per second, p50 ms, p99 ms].
"use strict";

module.exports = async function measure(caller, inFlight, ms) {
	const params = { msg: "0123456789" };
	for (let i = 0; i < 2000; i++) await caller.call("bench.echo", params);
	const latencies = [];
	const start = process.hrtime.bigint();
	const limit = BigInt(ms) * 1000000n;
	const worker = async () => {
		while (process.hrtime.bigint() - start < limit) {
			const t = process.hrtime.bigint();
			await caller.call("bench.echo", params);
			latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
		}
	};
	await Promise.all(Array.from({ length: inFlight }, worker));
	const secs = Number(process.hrtime.bigint() - start) / 1e9;
	latencies.sort((a, b) => a - b);
	const pct = p => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))];
	return [latencies.length / secs, pct(0.5), pct(0.99)];
};

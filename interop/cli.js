// The `moleculer` command against a cluster with a Node.js Moleculer 0.15 node and a Rust node
// over TCP: nodes, services, a call to the JS node, a failing call, an unknown action, an emit
// and a bench, with --json output parsed.
"use strict";
const { execFile } = require("child_process");
const { sleep, until, freePort, startRust, rustSees } = require("./harness");

const CLI = process.env.MOLECULER_CLI_BIN;

/// Runs the command; resolves with { code, stdout, stderr }.
function cli(args) {
	return new Promise(resolve => {
		execFile(CLI, args, { timeout: 20000 }, (err, stdout, stderr) => {
			resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr });
		});
	});
}

async function run(check, assert) {
	const { ServiceBroker, Errors } = require("moleculer");
	console.log(`\nThe moleculer command with Moleculer ${ServiceBroker.MOLECULER_VERSION} and Rust nodes, TCP transporter, JSON`);
	if (!CLI) throw new Error("MOLECULER_CLI_BIN must point to the built `moleculer` command (scripts/interop.sh sets it)");
	const ports = [await freePort(), await freePort()];
	const urls = [`127.0.0.1:${ports[0]}/rust-1`, `127.0.0.1:${ports[1]}/js-1`];
	const transport = { rust: "tcp://" + urls.join(",") };
	const rust = startRust("rust-1", transport, "JSON", "5");
	const received = [];
	const js = new ServiceBroker({
		nodeID: "js-1",
		logger: false,
		transporter: { type: "TCP", options: { urls, udpDiscovery: false } }
	});
	js.createService({
		name: "jsmath",
		actions: {
			mul: ctx => ctx.params.a * ctx.params.b,
			fail() {
				throw new Errors.MoleculerClientError("js says no", 409, "JS_NO", { why: "asked" });
			}
		},
		events: { "cli.hello"(ctx) { received.push(ctx.params); } }
	});
	const t = ["-t", `tcp://${urls[1]}`];
	try {
		await js.start();
		await until("the Rust node to see the JS node", () => rustSees(js, "rust-1", "js-1"), 30000);

		await check("moleculer --json nodes lists the JS and the Rust node", async () => {
			const out = await cli([...t, "--json", "nodes"]);
			assert(out.code === 0, out.stderr);
			const nodes = JSON.parse(out.stdout);
			const up = nodes.filter(n => n.available).map(n => n.id).sort();
			assert(JSON.stringify(up) === JSON.stringify(["js-1", "rust-1"]), JSON.stringify(up));
			assert(nodes.find(n => n.id === "js-1").client.type === "nodejs", "the JS node's client type");
		});

		await check("moleculer --json services shows each service with its nodes", async () => {
			const out = await cli([...t, "--json", "services"]);
			assert(out.code === 0, out.stderr);
			const services = JSON.parse(out.stdout);
			const jsmath = services.find(s => s.name === "jsmath");
			assert(jsmath && JSON.stringify(jsmath.nodes) === JSON.stringify(["js-1"]), JSON.stringify(jsmath));
			assert(services.some(s => s.name === "math" && s.nodes.includes("rust-1")), "the Rust node's math");
		});

		await check("moleculer call reaches the JS node and prints the result", async () => {
			const out = await cli([...t, "--json", "call", "jsmath.mul", '{"a": 6, "b": 7}']);
			assert(out.code === 0, out.stderr);
			assert(JSON.parse(out.stdout) === 42, out.stdout);
		});

		await check("a failing call exits 1 with the JS error's name, code, type and data", async () => {
			const out = await cli([...t, "call", "jsmath.fail"]);
			assert(out.code === 1, `exit ${out.code}`);
			for (const part of ["MoleculerClientError", "js says no", "code: 409", "type: JS_NO", '"why":"asked"']) {
				assert(out.stderr.includes(part), `${part} in ${out.stderr}`);
			}
		});

		await check("an unknown action is an error that names it", async () => {
			const out = await cli([...t, "--wait", "500", "call", "nobody.here"]);
			assert(out.code === 1 && out.stderr.includes("nobody.here"), out.stderr);
		});

		await check("moleculer emit reaches the JS node's handler", async () => {
			const out = await cli([...t, "emit", "cli.hello", '{"from": "cli"}']);
			assert(out.code === 0, out.stderr);
			await until("the JS handler", () => received.some(p => p.from === "cli"), 5000);
		});
		await check("moleculer bench measures calls to the JS node (--json parsed)", async () => {
			const out = await cli([...t, "--json", "bench", "jsmath.mul", '{"a": 2, "b": 3}', "--time", "1", "--concurrency", "4"]);
			assert(out.code === 0, out.stderr);
			const report = JSON.parse(out.stdout);
			assert(report.calls > 10 && report.errors === 0, out.stdout);
			assert(report.latencyMs.p50 <= report.latencyMs.p99 && report.latencyMs.p99 <= report.latencyMs.max, out.stdout);
			console.log(`       (${Math.round(report.perSecond)} calls/s to the JS node, p99 ${report.latencyMs.p99} ms)`);
		});
	} finally {
		await js.stop().catch(() => {});
		rust.kill("SIGKILL");
		await sleep(200);
	}
}

module.exports = { run };

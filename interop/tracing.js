// One trace across Node.js and Rust: a JS action calls a Rust action (relay.call) that calls a
// JS action. The JS spans are kept by an in-memory exporter; the Rust hop reports its
// context's ids in its reply. Every hop must carry the JS request id as the trace id, and each
// context's parent must be the one before it.
"use strict";
const { until, startRust, rustSees, tcpTransport } = require("./harness");

async function run(check, assert) {
	const { ServiceBroker, TracerExporters } = require("moleculer");
	console.log(`\nOne trace through Moleculer ${ServiceBroker.MOLECULER_VERSION} and Rust, TCP`);

	/** Keeps every finished span. */
	class Keep extends TracerExporters.Base {
		constructor() {
			super({});
			this.spans = [];
		}
		spanFinished(span) {
			this.spans.push(span);
		}
	}
	const keep = new Keep();
	const transport = await tcpTransport();
	const rust = startRust("rust-1", transport, "JSON", "5", {
		env: { MOL_TRACING__ENABLED: "true" }
	});
	const js = new ServiceBroker({
		nodeID: "js-1",
		logger: false,
		transporter: transport.js,
		tracing: { enabled: true, exporter: keep }
	});
	js.createService({
		name: "entry",
		actions: {
			async start(ctx) {
				const relayed = await ctx.call("relay.call", { action: "leaf.echo", params: {} });
				return { self: { id: ctx.id, requestID: ctx.requestID }, relayed };
			}
		}
	});
	js.createService({
		name: "leaf",
		actions: {
			echo(ctx) {
				return { id: ctx.id, parentID: ctx.parentID, requestID: ctx.requestID, level: ctx.level };
			}
		}
	});
	try {
		await js.start();
		await until("the Rust node to see the JS node", () => rustSees(js, "rust-1", "js-1"), 30000);
		await js.waitForServices(["relay"], 10000);
		await until("the Rust node to know leaf.echo", async () => {
			const actions = await js.call("$node.actions", {}, { nodeID: "rust-1" });
			return actions.some(a => a.name === "leaf.echo");
		}, 10000);

		const answer = await js.call("entry.start");
		const rustHop = answer.relayed.context;
		const leaf = answer.relayed.data;
		const trace = answer.self.requestID;
		await until("the JS spans to finish", () => keep.spans.filter(s => s.traceID === trace).length >= 2, 5000);
		const spans = keep.spans.filter(s => s.traceID === trace);
		const entrySpan = spans.find(s => s.name === "action 'entry.start'");
		const leafSpan = spans.find(s => s.name === "action 'leaf.echo'");

		await check("the Rust hop continues the JS trace: its parent is the JS span", async () => {
			assert(entrySpan, `no span for entry.start in ${JSON.stringify(spans.map(s => s.name))}`);
			assert(rustHop.requestID === trace, `Rust request id ${rustHop.requestID}, trace ${trace}`);
			assert(rustHop.parentID === entrySpan.id, `Rust parent ${rustHop.parentID}, JS span ${entrySpan.id}`);
			assert(rustHop.level === 2, `level ${rustHop.level}`);
			assert(rustHop.tracing === true, `the sampled flag reached Rust: ${rustHop.tracing}`);
		});

		await check("back in JS, the span's parent is the Rust hop, in the same trace", async () => {
			assert(leafSpan, `no span for leaf.echo in ${JSON.stringify(spans.map(s => s.name))}`);
			assert(leafSpan.traceID === trace, `trace ${leafSpan.traceID}`);
			assert(leafSpan.parentID === rustHop.id, `JS parent ${leafSpan.parentID}, Rust context ${rustHop.id}`);
			assert(leaf.parentID === rustHop.id && leaf.level === 3, JSON.stringify(leaf));
			assert(leafSpan.sampled === true, "still sampled");
		});
	} finally {
		await js.stop().catch(() => {});
		rust.kill("SIGKILL");
		transport.stop();
	}
}

module.exports = { run };

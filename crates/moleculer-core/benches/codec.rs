//! REQUEST packet encode and decode with each serializer.
//!
//! Run with: `cargo bench -p moleculer-core --bench codec`

use std::hint::black_box;
use std::time::{Duration, Instant};

use moleculer_core::protocol::{Packet, PacketType, RequestPacket};
use moleculer_core::serializer::SerializerKind;
use moleculer_core::Meta;
use serde_json::json;

fn request() -> Packet {
    let mut meta = Meta::new();
    meta.insert("user".into(), json!({ "id": 5, "roles": ["admin"] }));
    Packet::Request(RequestPacket {
        id: "0d33b5c8-5a1e-4c1f-8a57-4f0e2f6a3b91".into(),
        action: "v2.math.add".into(),
        params: json!({ "a": 1, "b": 2.5, "msg": "0123456789" }),
        meta,
        headers: Some(Meta::new()),
        timeout: Some(1000.0),
        level: 1,
        tracing: None,
        parent_id: None,
        request_id: Some("0d33b5c8-5a1e-4c1f-8a57-4f0e2f6a3b91".into()),
        caller: None,
        stream: Some(false),
        seq: None,
        ver: "5".into(),
        sender: "node-a".into(),
    })
}

fn rate(mut op: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        op();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..1000 {
            op();
        }
        n += 1000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let packet = request();
    println!("REQUEST packet encode/decode (one thread)");
    for kind in [SerializerKind::Json, SerializerKind::MsgPack] {
        let s = kind.build();
        let bytes = s.encode(&packet).unwrap();
        let enc = rate(|| drop(black_box(s.encode(black_box(&packet)).unwrap())));
        let dec = rate(|| {
            drop(black_box(
                s.decode(PacketType::Request, black_box(&bytes)).unwrap(),
            ));
        });
        println!(
            "{:<8} {:>4} bytes   encode {:>6.2} M/s ({:>5.0} ns)   decode {:>6.2} M/s ({:>5.0} ns)",
            s.name(),
            bytes.len(),
            enc / 1e6,
            1e9 / enc,
            dec / 1e6,
            1e9 / dec
        );
    }
}

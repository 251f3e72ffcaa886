//! Times the SIP stream framer on the worst read pattern: a 60 KB head arriving one byte per
//! read (`cargo run --release -p presence-sip --example framer_time`; BENCHMARKS.md, "SIP
//! stream framing").

fn main() {
    let mut head = String::from("MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKx\r\n");
    while head.len() < 60_000 {
        head.push_str("X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    let t = std::time::Instant::now();
    let mut f = presence_sip::message::Framer::new();
    let mut n = 0;
    for b in head.as_bytes().chunks(1) {
        f.extend(b);
        if let Ok(Some(_)) = f.next_frame() { n += 1; }
    }
    println!("{} bytes a byte at a time: {n} frame(s) in {:?}", head.len(), t.elapsed());
}

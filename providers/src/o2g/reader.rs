//! The chunked event stream of one subscription: `POST` its polling URL and read the answer
//! chunk by chunk for as long as O2G keeps it open, one JSON event per line.
//!
//! The answer's head must come within `call_timeout_secs` ([`open_stream`]); a refusal is read
//! (bounded) into the toolkit's [`CallError`], so a `401` says the session is gone. The body is
//! never held whole: each chunk goes through the [`LineSplitter`], which keeps at most
//! [`MAX_EVENT_BYTES`] of a line (a longer one is dropped and reported as [`Line::TooLong`]),
//! and the lines go to the provider's task in order through its bounded channel. A channel
//! silent for `stream_idle_secs` is taken as ended. A clean end is re-opened at once (at most
//! once a second); a failure is reported and the reader stops.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::parse::{Line, LineSplitter, MAX_EVENT_BYTES};
use super::runtime::Input;
use super::session::{self, DEFAULT_RETRY};
use crate::common::http::{self, open_stream, CallError};

/// The stream's request has no overall deadline of its own (the hub's client has 30 s): it
/// lives as long as O2G keeps it open, and silence is the idle timeout's.
const STREAM_DEADLINE: Duration = Duration::from_secs(366 * 86_400);
/// A channel that ends sooner than this after it opened is re-opened only this long after
/// it opened: a server that ends every channel at once must not get a tight loop.
const MIN_REOPEN: Duration = Duration::from_secs(1);

/// How one opening of the channel ended.
#[derive(Debug)]
enum End {
    /// O2G ended the answer (or it went silent for the idle timeout): re-open.
    Clean {
        /// It went silent.
        idle: bool,
    },
    /// It failed; the reader stops.
    Failed(CallError),
    /// The provider's task is gone.
    Gone,
}

/// Reads one subscription's event channel for the provider's task.
pub struct Reader {
    /// The hub's HTTP client.
    pub http: reqwest::Client,
    /// The polling URL.
    pub url: String,
    /// The session cookie.
    pub cookie: String,
    /// Deadline of the answer's head.
    pub open_timeout: Duration,
    /// Silence after which the channel counts as ended (`None`: never).
    pub idle: Option<Duration>,
    /// To the provider's task.
    pub tx: mpsc::Sender<Input>,
    /// Subscription generation.
    pub gen: u64,
    /// Subscription slot.
    pub sub: usize,
}

impl Reader {
    /// Reads until the channel fails or the task goes away.
    pub async fn run(self) {
        let (gen, sub) = (self.gen, self.sub);
        loop {
            let started = Instant::now();
            let end = match self.open().await {
                Ok(res) => {
                    if self.tx.send(Input::Connected { gen, sub }).await.is_err() {
                        return;
                    }
                    self.read(res).await
                }
                Err(error) => End::Failed(error),
            };
            match end {
                End::Clean { idle } => {
                    if self.tx.send(Input::Ended { gen, sub, idle }).await.is_err() {
                        return;
                    }
                }
                End::Failed(error) => {
                    let _ = self.tx.send(Input::Lost { gen, sub, error }).await;
                    return;
                }
                End::Gone => return,
            }
            tokio::time::sleep_until(started + MIN_REOPEN).await;
        }
    }

    async fn open(&self) -> Result<reqwest::Response, CallError> {
        let req = self.http.post(&self.url).header("accept", "*/*").header("cookie", &self.cookie).timeout(STREAM_DEADLINE);
        open_stream(req, session::limits(self.open_timeout), DEFAULT_RETRY).await
    }

    /// Reads the answer chunk by chunk, handing over the lines of each chunk.
    async fn read(&self, mut res: reqwest::Response) -> End {
        let mut splitter = LineSplitter::new(MAX_EVENT_BYTES);
        let mut lines = Vec::new();
        loop {
            let next = match self.idle {
                Some(d) => match tokio::time::timeout(d, res.chunk()).await {
                    Ok(r) => r,
                    Err(_) => return End::Clean { idle: true },
                },
                None => res.chunk().await,
            };
            let end = match next {
                Ok(Some(bytes)) => {
                    splitter.push(&bytes, &mut lines);
                    None
                }
                Ok(None) => {
                    splitter.finish(&mut lines);
                    Some(End::Clean { idle: false })
                }
                Err(e) => Some(End::Failed(http::transport(e))),
            };
            // Whatever came before an end is still delivered, in order.
            if !self.hand_over(&mut lines).await {
                return End::Gone;
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    async fn hand_over(&self, lines: &mut Vec<Line>) -> bool {
        for line in lines.drain(..) {
            if self.tx.send(Input::Line { gen: self.gen, sub: self.sub, line }).await.is_err() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::http::loopback::{answer, client, peer};

    fn reader(url: String, idle: Option<Duration>) -> (Reader, mpsc::Receiver<Input>) {
        let (tx, rx) = mpsc::channel(64);
        let r = Reader { http: client(), url, cookie: "AlcUserId=c".into(), open_timeout: Duration::from_secs(5), idle, tx, gen: 7, sub: 0 };
        (r, rx)
    }

    fn chunk(data: &[u8]) -> Vec<u8> {
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data);
        c.extend_from_slice(b"\r\n");
        c
    }

    #[tokio::test]
    async fn lines_come_in_order_and_an_overlong_line_is_dropped_not_kept() {
        let mut body = chunk(b"{\"eventName\":\"OnChannelInformation\"}\n{\"a\":");
        body.extend(chunk(b"1}\n"));
        // One line of 1 MiB in 64 KiB chunks: more than a line may be; the reader keeps none of it.
        for _ in 0..16 {
            body.extend(chunk(&[b'x'; 64 * 1024]));
        }
        body.extend(chunk(b"\n{\"b\":2}\n"));
        let url = peer(Some(answer("200 OK", &[("transfer-encoding", "chunked")], &body)));
        let (r, mut rx) = reader(url, Some(Duration::from_millis(300)));
        let task = tokio::spawn(r.run());
        let mut got = Vec::new();
        // The peer holds the answer open after its lines: the idle timeout ends it.
        while got.last().is_none_or(|l: &String| !l.starts_with("ended")) {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("input in time").expect("reader alive") {
                Input::Connected { gen: 7, sub: 0 } => got.push("connected".to_string()),
                Input::Line { line: Line::Event(b), .. } => got.push(String::from_utf8_lossy(&b).into_owned()),
                Input::Line { line: Line::TooLong, .. } => got.push("too long".into()),
                Input::Ended { idle, .. } => got.push(format!("ended idle={idle}")),
                other => panic!("{other:?}"),
            }
        }
        task.abort();
        assert_eq!(got, ["connected", "{\"eventName\":\"OnChannelInformation\"}", "{\"a\":1}", "too long", "{\"b\":2}", "ended idle=true"]);
    }

    #[tokio::test]
    async fn a_refused_channel_is_lost_with_the_session() {
        let url = peer(Some(answer("401 Unauthorized", &[("content-length", "0")], b"")));
        let (r, mut rx) = reader(url, None);
        r.run().await;
        match rx.recv().await {
            Some(Input::Lost { gen: 7, sub: 0, error }) => assert!(error.unauthorized(), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}

//! Refused requests on the record: every refusal of a request that would
//! change state (anything but GET/HEAD/OPTIONS) answered 401, 403, 421 or
//! 429 logs one INFO `audit: refused` line — who (the peer's address, the
//! token's name when one was recognised), method, path, status, why.
//! A flood cannot fill the disk: each peer address gets at most
//! [`LINES_PER_MINUTE`] lines a minute; past that its refusals are only
//! counted, and the first line of its next minute says how many were left
//! out. (Every refusal, logged or not, is counted in
//! `tasktape_http_requests_total` with its status.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};

/// The peer a request came from (the listener adds it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) IpAddr);

/// Most audit lines of refusals per peer address and minute.
pub(crate) const LINES_PER_MINUTE: u32 = 20;
const WINDOW: Duration = Duration::from_secs(60);
/// Peers remembered at most (a scan of many addresses forgets the oldest
/// windows first).
const MAX_PEERS: usize = 10_000;

#[derive(Default)]
pub(crate) struct RefusalLog {
    peers: Mutex<HashMap<IpAddr, Window>>,
}

struct Window {
    started: Instant,
    lines: u32,
    left_out: u64,
}

impl RefusalLog {
    /// Logs (or counts, past the peer's allowance) one refusal.
    pub(crate) fn refused(
        &self,
        peer: Option<Peer>,
        token: Option<&str>,
        method: &Method,
        path: &str,
        status: StatusCode,
        why: &str,
    ) {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return;
        }
        let address = peer.map_or_else(|| "-".to_owned(), |peer| peer.0.to_string());
        let left_out = match peer {
            None => Some(0),
            Some(Peer(ip)) => self.admit(ip),
        };
        let Some(left_out) = left_out else {
            return;
        };
        tracing::info!(
            peer = %address,
            token = %token.unwrap_or("-"),
            %method,
            %path,
            status = status.as_u16(),
            why,
            suppressed_before = left_out,
            "audit: refused"
        );
    }

    /// Whether `ip` may log a line now (`Some(refusals left out since its
    /// last line)`), or only be counted (`None`).
    fn admit(&self, ip: IpAddr) -> Option<u64> {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = Instant::now();
        if peers.len() >= MAX_PEERS && !peers.contains_key(&ip) {
            peers.retain(|_, window| now.duration_since(window.started) < WINDOW);
            if peers.len() >= MAX_PEERS {
                peers.clear();
            }
        }
        let window = peers.entry(ip).or_insert(Window {
            started: now,
            lines: 0,
            left_out: 0,
        });
        if now.duration_since(window.started) >= WINDOW {
            window.started = now;
            window.lines = 0;
        }
        if window.lines >= LINES_PER_MINUTE {
            window.left_out += 1;
            return None;
        }
        window.lines += 1;
        Some(std::mem::take(&mut window.left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peer_gets_its_allowance_of_lines_a_minute() {
        let log = RefusalLog::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..LINES_PER_MINUTE {
            assert_eq!(log.admit(a), Some(0));
        }
        assert_eq!(log.admit(a), None);
        assert_eq!(log.admit(a), None);
        assert_eq!(log.admit(b), Some(0), "another peer is not held back");
        // A new minute: the first line says how many were left out.
        log.peers.lock().unwrap().get_mut(&a).unwrap().started -= WINDOW;
        assert_eq!(log.admit(a), Some(2));
        assert_eq!(log.admit(a), Some(0));
    }
}

//! Requests for stripes a newer version took over: forwarded to it, one at a time, over a
//! connection per worker thread to its forwarding port on 127.0.0.1.
//!
//! A newer version whose keyspace has another type (v3 keeps lists as rings) migrates the
//! keyspace at its attach (`src/migrate.rs`): under every stripe's lock it builds its own
//! keyspace out of the old one's blocks and marks each old stripe with its forwarding port
//! ([`Handover`](crate::keyspace::Handover)). From then on an older version serves nothing
//! from the old stripes: [`Keyspace::lock`] unwinds a request that needs one with a
//! [`Moved`] payload before it changed anything, and the server sends the request to the
//! newer version here and relays its reply. So no write is made to the old keyspace after
//! the migration read it, and none is lost. Until the newer version is ready and has
//! marked the old stripes committed it serves nothing; if it dies before,
//! [`take_back`] makes the old stripes this version's again (the migration took nothing
//! away from them).

use crate::commands::Store;
use crate::keyspace::{Keyspace, ListRepr, Moved, STRIPES};
use crate::resp;
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};

/// Requests this process forwarded (the retirement message says how many).
pub static FORWARDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// This thread's connection to the newer version: its port and the stream.
    static CONN: RefCell<Option<(u16, TcpStream)>> = const { RefCell::new(None) };
}

/// Sends the request `args` to the newer version at `moved.port` and appends its reply to
/// `out`.
///
/// # Errors
///
/// The newer version cannot be reached, closed the connection, or replied with bytes that
/// are not one RESP reply: it is gone (see [`take_back`]).
pub fn forward(moved: Moved, args: &[&[u8]], out: &mut Vec<u8>) -> io::Result<()> {
    CONN.with_borrow_mut(|conn| {
        if conn.as_ref().is_none_or(|(p, _)| *p != moved.port) {
            *conn = None;
            let s = TcpStream::connect((Ipv4Addr::LOCALHOST, moved.port))?;
            s.set_nodelay(true)?;
            *conn = Some((moved.port, s));
        }
        let (_, s) = conn.as_mut().expect("connected above");
        let r = exchange(s, args, out);
        match r {
            Ok(()) => {
                FORWARDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(_) => *conn = None,
        }
        r
    })
}

fn exchange(s: &mut TcpStream, args: &[&[u8]], out: &mut Vec<u8>) -> io::Result<()> {
    let mut req = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    resp::array(&mut req, args.len());
    for a in args {
        resp::bulk(&mut req, a);
    }
    s.write_all(&req)?;
    let start = out.len();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match resp::parse_reply(&out[start..]) {
            Ok(Some((_, used))) if used == out.len() - start => return Ok(()),
            Ok(Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the newer version sent more than one reply",
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// After a failed [`forward`]: if the newer version never served the stripes (it died
/// before marking them committed), makes every stripe it had taken over this version's
/// again and returns `true` (the request is then executed here). Returns `false` if it had
/// served them: this version's copy is stale, and the request must fail.
pub fn take_back(store: Store, moved: Moved, why: &io::Error) -> bool {
    let back = match store {
        Store::Heap(ks) => take_back_in(ks, moved),
        Store::HeapV3(ks) => take_back_in(ks, moved),
        Store::Local(ks) => take_back_in(ks, moved),
        Store::LocalV3(ks) => take_back_in(ks, moved),
    };
    eprintln!(
        "dsu-kv: the version on port {} that took stripe {} over is unreachable ({why}); {}",
        moved.port,
        moved.stripe,
        if back {
            "it never served: the stripes are served here again"
        } else {
            "it had served them: requests for them fail"
        }
    );
    back
}

fn take_back_in<A: crate::alloc::KvAlloc, L: ListRepr<A>>(
    ks: &'static Keyspace<A, L>,
    moved: Moved,
) -> bool {
    if ks.lock_any(moved.stripe).handover.committed != 0 {
        return false;
    }
    for i in 0..STRIPES {
        let mut g = ks.lock_any(i);
        if g.handover.port == u32::from(moved.port) && g.handover.committed == 0 {
            g.handover.port = 0;
        }
    }
    true
}

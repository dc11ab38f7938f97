//! RESP2, the Redis serialization protocol: a request parser that accepts both multibulk
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what clients send) and inline commands (`PING\r\n`,
//! what `redis-benchmark`'s `PING_INLINE` test and a human on `nc` send), and reply
//! serializers.
//!
//! Requests may be pipelined: [`parse`] takes one request off the front of a buffer and says
//! how many bytes it used, so the caller loops until [`Parsed::Incomplete`].
//!
//! ```
//! use dsu_kv::resp::{parse, Parsed};
//! let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n";
//! let Parsed::Request(args, used) = parse(buf).unwrap() else { panic!() };
//! assert_eq!(args, [&b"GET"[..], &b"k"[..]]);
//! let Parsed::Request(args, _) = parse(&buf[used..]).unwrap() else { panic!() };
//! assert_eq!(args, [&b"PING"[..]]);
//! ```

/// Longest bulk string a request may carry: Redis's `proto-max-bulk-len`, 512 MiB.
pub const MAX_BULK: usize = 512 << 20;
/// Most arguments in one request (Redis's limit is `INT_MAX`; this one bounds the
/// argument vector of a request still arriving to 16 MiB).
pub const MAX_ARGS: usize = 1 << 20;
/// Longest inline command line.
pub const MAX_INLINE: usize = 64 * 1024;

/// The result of parsing the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole request: its arguments (borrowed from the buffer; may be empty for a blank
    /// line or `*0`, which the caller skips) and the number of bytes it used.
    Request(Vec<&'a [u8]>, usize),
    /// The buffer holds only the beginning of a request: read more.
    Incomplete,
}

/// A malformed request. The server replies `-ERR Protocol error: <msg>` and closes the
/// connection, as Redis does.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct ProtocolError(pub &'static str);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Position of the first `\r\n` at or after `from` (each `\n` found by `memchr`, a word
/// at a time, rather than a byte-pair comparison at every position).
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let nl = at + memchr::memchr(b'\n', buf.get(at..)?)?;
        if nl > from && buf[nl - 1] == b'\r' {
            return Some(nl - 1);
        }
        at = nl + 1;
    }
}

/// Parses a decimal `i64` (optional leading `-`, no other characters), as Redis does for
/// lengths, counters and increments.
///
/// ```
/// assert_eq!(dsu_kv::resp::parse_int(b"-9223372036854775808"), Some(i64::MIN));
/// assert_eq!(dsu_kv::resp::parse_int(b" 1"), None);
/// ```
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: i128 = 0;
    for &d in digits {
        v = v * 10 + (d - b'0') as i128;
    }
    i64::try_from(if neg { -v } else { v }).ok()
}

/// Parses one request off the front of `buf`.
///
/// ```
/// use dsu_kv::resp::{parse, Parsed};
/// assert_eq!(parse(b"*1\r\n$4\r\nPI").unwrap(), Parsed::Incomplete);
/// assert!(parse(b"*1\r\n$x\r\n").is_err());
/// ```
pub fn parse(buf: &[u8]) -> Result<Parsed<'_>, ProtocolError> {
    let mut args = Vec::new();
    Ok(match parse_into(buf, &mut args)? {
        Some(used) => Parsed::Request(args, used),
        None => Parsed::Incomplete,
    })
}

/// Parses one request off the front of `buf` into `args` (cleared first; a server reuses
/// one vector for every request of a read, instead of allocating one per request):
/// `Some(used)` for a whole request of `used` bytes (`args` empty for a blank line or
/// `*0`, which the caller skips), `None` when `buf` holds only its beginning.
///
/// ```
/// let mut args = Vec::new();
/// let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n";
/// assert_eq!(dsu_kv::resp::parse_into(buf, &mut args).unwrap(), Some(20));
/// assert_eq!(args, [&b"GET"[..], &b"k"[..]]);
/// assert_eq!(dsu_kv::resp::parse_into(&buf[20..], &mut args).unwrap(), Some(6));
/// assert_eq!(args, [&b"PING"[..]]);
/// assert_eq!(dsu_kv::resp::parse_into(b"PI", &mut args).unwrap(), None);
/// ```
pub fn parse_into<'a>(
    buf: &'a [u8],
    args: &mut Vec<&'a [u8]>,
) -> Result<Option<usize>, ProtocolError> {
    args.clear();
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, args),
        Some(_) => parse_inline(buf, args),
    }
}

fn parse_multibulk<'a>(
    buf: &'a [u8],
    args: &mut Vec<&'a [u8]>,
) -> Result<Option<usize>, ProtocolError> {
    let Some(end) = find_crlf(buf, 1) else {
        if buf.len() > 32 {
            return Err(ProtocolError("invalid multibulk length"));
        }
        return Ok(None);
    };
    let n = parse_int(&buf[1..end]).ok_or(ProtocolError("invalid multibulk length"))?;
    if n > MAX_ARGS as i64 {
        return Err(ProtocolError("invalid multibulk length"));
    }
    let mut pos = end + 2;
    if n <= 0 {
        return Ok(Some(pos));
    }
    // Not more up front than a small request needs: `n` is the client's claim.
    args.reserve((n as usize).min(1024));
    for _ in 0..n {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(_) => return Err(ProtocolError("expected '$'")),
        }
        let Some(end) = find_crlf(buf, pos + 1) else {
            if buf.len() - pos > 32 {
                return Err(ProtocolError("invalid bulk length"));
            }
            return Ok(None);
        };
        let len = parse_int(&buf[pos + 1..end]).ok_or(ProtocolError("invalid bulk length"))?;
        if !(0..=MAX_BULK as i64).contains(&len) {
            return Err(ProtocolError("invalid bulk length"));
        }
        let start = end + 2;
        let stop = start + len as usize;
        if buf.len() < stop + 2 {
            return Ok(None);
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(ProtocolError("bulk string not followed by CRLF"));
        }
        args.push(&buf[start..stop]);
        pos = stop + 2;
    }
    Ok(Some(pos))
}

fn parse_inline<'a>(
    buf: &'a [u8],
    args: &mut Vec<&'a [u8]>,
) -> Result<Option<usize>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_INLINE {
            return Err(ProtocolError("too big inline request"));
        }
        return Ok(None);
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    args.extend(
        line.split(|b| *b == b' ' || *b == b'\t')
            .filter(|a| !a.is_empty()),
    );
    if args.len() > MAX_ARGS {
        return Err(ProtocolError("too many inline arguments"));
    }
    Ok(Some(nl + 1))
}

/// Appends a simple string reply, `+<s>\r\n`.
pub fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends an error reply, `-<msg>\r\n` (the message starts with its code, e.g. `ERR`).
pub fn error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    // An error line cannot hold CR or LF.
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends `<tag><n>\r\n`, the number formatted on the stack (no allocation per reply).
fn tagged(out: &mut Vec<u8>, tag: u8, n: impl itoa::Integer) {
    out.push(tag);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends an integer reply, `:<n>\r\n`.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    tagged(out, b':', n);
}

/// Appends a bulk string reply, `$<len>\r\n<bytes>\r\n`.
pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.reserve(b.len() + 16);
    tagged(out, b'$', b.len());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// Appends the null bulk reply, `$-1\r\n` (a missing key).
pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends an array header, `*<n>\r\n`; the caller appends the `n` elements.
pub fn array(out: &mut Vec<u8>, n: usize) {
    tagged(out, b'*', n);
}

/// A reply read back by a client: what [`parse_reply`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+...`
    Simple(String),
    /// `-...`
    Error(String),
    /// `:...`
    Integer(i64),
    /// `$...` (`None`: the null bulk `$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*...` (`None`: the null array `*-1`).
    Array(Option<Vec<Reply>>),
}

/// Parses one reply off the front of `buf` (client side, for tests and the load test's
/// verifying client): `Ok(None)` when incomplete, else the reply and the bytes it used.
///
/// ```
/// use dsu_kv::resp::{parse_reply, Reply};
/// assert_eq!(parse_reply(b":42\r\n").unwrap(), Some((Reply::Integer(42), 5)));
/// assert_eq!(parse_reply(b"$3\r\nab").unwrap(), None);
/// ```
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some(end) = find_crlf(buf, 1) else {
        return Ok(None);
    };
    let line = &buf[1..end];
    let text = || String::from_utf8_lossy(line).into_owned();
    let int = || parse_int(line).ok_or(ProtocolError("bad integer in reply"));
    let next = end + 2;
    Ok(Some(match kind {
        b'+' => (Reply::Simple(text()), next),
        b'-' => (Reply::Error(text()), next),
        b':' => (Reply::Integer(int()?), next),
        b'$' => {
            let n = int()?;
            if n < 0 {
                (Reply::Bulk(None), next)
            } else {
                let stop = next + n as usize;
                if buf.len() < stop + 2 {
                    return Ok(None);
                }
                (Reply::Bulk(Some(buf[next..stop].to_vec())), stop + 2)
            }
        }
        b'*' => {
            let n = int()?;
            if n < 0 {
                (Reply::Array(None), next)
            } else {
                let mut pos = next;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let Some((r, used)) = parse_reply(&buf[pos..])? else {
                        return Ok(None);
                    };
                    items.push(r);
                    pos += used;
                }
                (Reply::Array(Some(items)), pos)
            }
        }
        _ => return Err(ProtocolError("unknown reply type")),
    }))
}

/// Appends a request as a multibulk array (client side).
///
/// ```
/// let mut out = Vec::new();
/// dsu_kv::resp::request(&mut out, &[b"GET", b"k"]);
/// assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
/// ```
pub fn request(out: &mut Vec<u8>, args: &[&[u8]]) {
    array(out, args.len());
    for a in args {
        bulk(out, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut buf: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        while let Parsed::Request(args, used) = parse(buf).unwrap() {
            out.push(args.iter().map(|a| a.to_vec()).collect());
            buf = &buf[used..];
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline_pipelined() {
        let buf =
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\nPING\r\n  get   k \n*1\r\n$4\r\nPING\r\n";
        assert_eq!(
            all(buf),
            vec![
                v(&["SET", "key", ""]),
                v(&["PING"]),
                v(&["get", "k"]),
                v(&["PING"])
            ]
        );
    }

    #[test]
    fn binary_safe_bulk() {
        let buf = b"*2\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n";
        assert_eq!(all(buf), vec![vec![b"SET".to_vec(), b"a\r\nb".to_vec()]]);
    }

    #[test]
    fn empty_requests() {
        let Parsed::Request(a, used) = parse(b"\r\n").unwrap() else {
            panic!()
        };
        assert!(a.is_empty());
        assert_eq!(used, 2);
        let Parsed::Request(a, used) = parse(b"*0\r\n").unwrap() else {
            panic!()
        };
        assert!(a.is_empty());
        assert_eq!(used, 4);
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let buf = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$5\r\nworld\r\n";
        for i in 0..buf.len() {
            assert_eq!(parse(&buf[..i]).unwrap(), Parsed::Incomplete, "prefix {i}");
        }
        assert!(matches!(parse(buf).unwrap(), Parsed::Request(_, n) if n == buf.len()));
        let inline = b"PING hello\r\n";
        for i in 0..inline.len() {
            assert_eq!(
                parse(&inline[..i]).unwrap(),
                Parsed::Incomplete,
                "prefix {i}"
            );
        }
    }

    #[test]
    fn malformed() {
        assert!(parse(b"*x\r\n").is_err());
        assert!(parse(b"*1\r\n+PING\r\n").is_err());
        assert!(parse(b"*1\r\n$-1\r\n").is_err());
        assert!(parse(b"*1\r\n$4\r\nPINGxx").is_err());
        assert!(parse(b"*99999999\r\n").is_err());
        assert!(parse(b"*1\r\n$99999999999\r\n").is_err());
        assert!(parse(&[b'*'; 64]).is_err());
        assert!(parse(&vec![b'a'; MAX_INLINE + 1]).is_err());
    }

    #[test]
    fn replies_roundtrip() {
        let mut out = Vec::new();
        simple(&mut out, "OK");
        error(&mut out, "ERR bad\r\nthing");
        integer(&mut out, -7);
        bulk(&mut out, b"x\r\ny");
        null(&mut out);
        array(&mut out, 2);
        bulk(&mut out, b"a");
        integer(&mut out, 1);
        let want = [
            Reply::Simple("OK".into()),
            Reply::Error("ERR bad  thing".into()),
            Reply::Integer(-7),
            Reply::Bulk(Some(b"x\r\ny".to_vec())),
            Reply::Bulk(None),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"a".to_vec())),
                Reply::Integer(1),
            ])),
        ];
        let mut buf = &out[..];
        for w in want {
            let (r, used) = parse_reply(buf).unwrap().unwrap();
            assert_eq!(r, w);
            buf = &buf[used..];
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn request_parses_back() {
        let mut out = Vec::new();
        request(&mut out, &[b"SET", b"k", b"v v"]);
        assert_eq!(all(&out), vec![v(&["SET", "k", "v v"])]);
    }

    #[test]
    fn crlf_search() {
        assert_eq!(find_crlf(b"ab\r\n", 0), Some(2));
        assert_eq!(find_crlf(b"\r\nab\r\n", 1), Some(4));
        assert_eq!(find_crlf(b"a\nb\r\r\n", 0), Some(4));
        assert_eq!(find_crlf(b"\n\r\n", 0), Some(1));
        assert_eq!(find_crlf(b"ab\r", 0), None);
        assert_eq!(find_crlf(b"ab", 5), None);
        assert_eq!(find_crlf(b"\r\n", 1), None);
    }

    #[test]
    fn ints() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-12"), Some(-12));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b"-9223372036854775809"), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"-"), None);
        assert_eq!(parse_int(b"1a"), None);
        assert_eq!(parse_int(b"+1"), None);
    }
}

//! Redis replies (RESP2) and commands, as bytes.
//!
//! Replies are parsed from a buffer the caller owns: a reply split across
//! reads (or a read that timed out halfway) is `Ok(None)` and leaves its
//! bytes for the next read, so a slow reply is never mistaken for a broken
//! one. [`parse_ref`] borrows every string from that buffer (one `Vec` per
//! array, nothing per field): the cluster follower reads every stream entry
//! through it. [`parse`] is the same parser with owned strings, for replies
//! kept past the next read. RESP2 only (nobody here asks for RESP3).

/// One reply, its strings borrowed from the buffer it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyRef<'a> {
    /// `+text`.
    Simple(&'a str),
    /// `-ERR text`.
    Error(&'a str),
    /// `:123`.
    Int(i64),
    /// `$n` and n bytes, or `$-1` (`None`).
    Bulk(Option<&'a [u8]>),
    /// `*n` and n replies, or `*-1` (`None`).
    Array(Option<Vec<ReplyRef<'a>>>),
}

/// One reply, owning its strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    /// `+text`.
    Simple(String),
    /// `-ERR text`.
    Error(String),
    /// `:123`.
    Int(i64),
    /// `$n` and n bytes, or `$-1` (`None`).
    Bulk(Option<Vec<u8>>),
    /// `*n` and n replies, or `*-1` (`None`).
    Array(Option<Vec<Resp>>),
}

/// Bytes that are not a reply.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Malformed;

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed reply from Redis")
    }
}

impl std::error::Error for Malformed {}

/// Deepest nesting accepted (an `XREAD` reply nests four levels).
const MAX_DEPTH: usize = 8;

/// Parses the first reply in `buf`, borrowing its strings: `Ok(None)` while
/// it is incomplete, else the reply and how many bytes it took.
pub fn parse_ref(buf: &[u8]) -> Result<Option<(ReplyRef<'_>, usize)>, Malformed> {
    parse_at(buf, 0, 0)
}

/// [`parse_ref`], with the strings copied out of `buf`.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, Malformed> {
    Ok(parse_ref(buf)?.map(|(reply, used)| (reply.to_owned(), used)))
}

/// The text of a simple or bulk string reply.
pub fn text(reply: &Resp) -> Option<&str> {
    match reply {
        Resp::Simple(text) => Some(text),
        Resp::Bulk(Some(bytes)) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

impl<'a> ReplyRef<'a> {
    /// The same reply with its strings copied.
    pub fn to_owned(&self) -> Resp {
        match self {
            ReplyRef::Simple(text) => Resp::Simple((*text).to_owned()),
            ReplyRef::Error(text) => Resp::Error((*text).to_owned()),
            ReplyRef::Int(n) => Resp::Int(*n),
            ReplyRef::Bulk(bytes) => Resp::Bulk(bytes.map(<[u8]>::to_vec)),
            ReplyRef::Array(items) => {
                Resp::Array(items.as_ref().map(|items| items.iter().map(Self::to_owned).collect()))
            }
        }
    }

    /// The bytes of a bulk or simple string.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            ReplyRef::Bulk(Some(bytes)) => Some(bytes),
            ReplyRef::Simple(text) => Some(text.as_bytes()),
            _ => None,
        }
    }

    /// The items of an array (none for a nil array).
    pub fn items(&self) -> Option<&[ReplyRef<'a>]> {
        match self {
            ReplyRef::Array(Some(items)) => Some(items),
            ReplyRef::Array(None) => Some(&[]),
            _ => None,
        }
    }

    /// Appends the reply's wire form (numbers in their shortest form).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ReplyRef::Simple(text) => line(out, b'+', text.as_bytes()),
            ReplyRef::Error(text) => line(out, b'-', text.as_bytes()),
            ReplyRef::Int(n) => line(out, b':', n.to_string().as_bytes()),
            ReplyRef::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            ReplyRef::Bulk(Some(bytes)) => bulk(out, bytes),
            ReplyRef::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            ReplyRef::Array(Some(items)) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

/// Appends a command (an array of bulk strings), as Redis reads it.
pub fn pack<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    line(out, b'*', args.len().to_string().as_bytes());
    for arg in args {
        bulk(out, arg.as_ref());
    }
}

fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    line(out, b'$', bytes.len().to_string().as_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Where the line starting at `at` ends (its `\r\n`), if it is all in `buf`.
fn line_end(buf: &[u8], at: usize) -> Option<usize> {
    let mut from = at;
    loop {
        let cr = from + buf.get(from..)?.iter().position(|&b| b == b'\r')?;
        match buf.get(cr + 1) {
            Some(b'\n') => return Some(cr),
            Some(_) => from = cr + 1,
            None => return None,
        }
    }
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(ReplyRef<'_>, usize)>, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed);
    }
    let Some(end) = line_end(buf, at) else { return Ok(None) };
    let Some((&kind, line)) = buf[at..end].split_first() else { return Err(Malformed) };
    let line = std::str::from_utf8(line).map_err(|_| Malformed)?;
    let next = end + 2;
    let number = || line.parse::<i64>().map_err(|_| Malformed);
    Ok(Some(match kind {
        b'+' => (ReplyRef::Simple(line), next),
        b'-' => (ReplyRef::Error(line), next),
        b':' => (ReplyRef::Int(number()?), next),
        b'$' => match number()? {
            -1 => (ReplyRef::Bulk(None), next),
            n if n >= 0 => {
                let Some(after) = usize::try_from(n).ok().and_then(|n| next.checked_add(n)) else {
                    return Err(Malformed);
                };
                if buf.len() < after + 2 {
                    return Ok(None);
                }
                if &buf[after..after + 2] != b"\r\n" {
                    return Err(Malformed);
                }
                (ReplyRef::Bulk(Some(&buf[next..after])), after + 2)
            }
            _ => return Err(Malformed),
        },
        b'*' => match number()? {
            -1 => (ReplyRef::Array(None), next),
            n if n >= 0 => {
                // Capped: a huge count is believed only as its items arrive.
                let mut items = Vec::with_capacity((n as usize).min(1024));
                let mut pos = next;
                for _ in 0..n {
                    let Some((item, after)) = parse_at(buf, pos, depth + 1)? else { return Ok(None) };
                    items.push(item);
                    pos = after;
                }
                (ReplyRef::Array(Some(items)), pos)
            }
            _ => return Err(Malformed),
        },
        _ => return Err(Malformed),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_waits_for_the_rest() {
        let reply = b"*3\r\n$3\r\nnew\r\n$3\r\n5-0\r\n+OK\r\n:7\r\n";
        let (value, used) = parse(reply).unwrap().unwrap();
        let want = Resp::Array(Some(vec![
            Resp::Bulk(Some(b"new".to_vec())),
            Resp::Bulk(Some(b"5-0".to_vec())),
            Resp::Simple("OK".into()),
        ]));
        assert_eq!((value, used), (want, reply.len() - 4));
        assert_eq!(parse(&reply[used..]).unwrap(), Some((Resp::Int(7), 4)));
        for cut in 0..reply.len() - 4 {
            assert_eq!(parse(&reply[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(b"-ERR no\r\n").unwrap(), Some((Resp::Error("ERR no".into()), 9)));
        assert_eq!(parse(b"$-1\r\n*-1\r\n").unwrap(), Some((Resp::Bulk(None), 5)));
        assert_eq!(text(&Resp::Bulk(Some(b"1-2".to_vec()))), Some("1-2"));
        // A bulk string holds any bytes, CR and LF included.
        assert_eq!(parse_ref(b"$4\r\na\r\nb\r\n").unwrap(), Some((ReplyRef::Bulk(Some(b"a\r\nb")), 10)));
        assert_eq!(parse_ref(b"+a\rb\r\n").unwrap(), Some((ReplyRef::Simple("a\rb"), 6)));
    }

    #[test]
    fn borrows_an_xread_reply_without_copying() {
        let raw = b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n5-1\r\n*4\r\n$5\r\ntopic\r\n$1\r\nt\r\n$4\r\ndata\r\n$1\r\nd\r\n";
        let (reply, used) = parse_ref(raw).unwrap().unwrap();
        assert_eq!(used, raw.len());
        let stream = &reply.items().unwrap()[0];
        let entry = &stream.items().unwrap()[1].items().unwrap()[0];
        let (id, fields) = (entry.items().unwrap()[0].bytes(), entry.items().unwrap()[1].items().unwrap());
        assert_eq!(id, Some(&b"5-1"[..]));
        let data = fields[3].bytes().unwrap();
        assert!(raw.as_ptr_range().contains(&data.as_ptr()), "borrowed from the buffer");
        assert_eq!(data, b"d");
        assert_eq!(ReplyRef::Array(None).items(), Some(&[][..]));
    }

    #[test]
    fn encodes_what_it_parses_and_packs_commands() {
        for raw in [&b"*2\r\n$3\r\nnew\r\n*-1\r\n"[..], b":-3\r\n", b"-ERR x\r\n", b"+OK\r\n", b"$-1\r\n", b"*0\r\n"] {
            let (reply, _) = parse_ref(raw).unwrap().unwrap();
            let mut again = Vec::new();
            reply.encode(&mut again);
            assert_eq!(again, raw);
        }
        let mut command = Vec::new();
        pack(&mut command, &["XREAD", "COUNT", "2", "STREAMS", "s", "0-0"]);
        assert_eq!(
            command,
            b"*6\r\n$5\r\nXREAD\r\n$5\r\nCOUNT\r\n$1\r\n2\r\n$7\r\nSTREAMS\r\n$1\r\ns\r\n$3\r\n0-0\r\n"
        );
        let (parsed, _) = parse_ref(&command).unwrap().unwrap();
        assert_eq!(parsed.items().unwrap()[0].bytes(), Some(&b"XREAD"[..]));
    }

    #[test]
    fn refuses_what_is_not_a_reply() {
        for bad in [
            &b"?x\r\n"[..],
            b"$3\r\nabcd\r\n",
            b":x\r\n",
            b"$-2\r\n",
            b"\r\n",
            b"$99999999999999999999\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert_eq!(parse(bad), Err(Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
        // A length beyond any buffer is only ever incomplete (the caller's timeout ends it).
        assert_eq!(parse(b"$9223372036854775807\r\n"), Ok(None));
    }
}

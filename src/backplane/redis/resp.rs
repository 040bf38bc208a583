//! Replies on the publish pipeline's connection, parsed from a buffer the
//! reader owns: a reply split across reads (or a read that timed out
//! halfway) leaves its bytes in the buffer for the next read, so a slow
//! reply is never mistaken for a broken one. RESP2 only (the pipeline never
//! asks for RESP3).

/// One reply.
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

/// Deepest nesting accepted (the pipeline's replies nest one level).
const MAX_DEPTH: usize = 8;

/// Parses the first reply in `buf`: `Ok(None)` while it is incomplete,
/// else the reply and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, Malformed> {
    parse_at(buf, 0, 0)
}

/// The text of a simple or bulk string reply.
pub fn text(reply: &Resp) -> Option<&str> {
    match reply {
        Resp::Simple(text) => Some(text),
        Resp::Bulk(Some(bytes)) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Resp, usize)>, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed);
    }
    let Some(end) = buf[at..].windows(2).position(|w| w == b"\r\n").map(|p| at + p) else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[at..end].split_first() else { return Err(Malformed) };
    let line = std::str::from_utf8(line).map_err(|_| Malformed)?;
    let next = end + 2;
    let number = || line.parse::<i64>().map_err(|_| Malformed);
    Ok(Some(match kind {
        b'+' => (Resp::Simple(line.to_owned()), next),
        b'-' => (Resp::Error(line.to_owned()), next),
        b':' => (Resp::Int(number()?), next),
        b'$' => match number()? {
            -1 => (Resp::Bulk(None), next),
            n if n >= 0 => {
                let n = n as usize;
                if buf.len() < next + n + 2 {
                    return Ok(None);
                }
                if &buf[next + n..next + n + 2] != b"\r\n" {
                    return Err(Malformed);
                }
                (Resp::Bulk(Some(buf[next..next + n].to_vec())), next + n + 2)
            }
            _ => return Err(Malformed),
        },
        b'*' => match number()? {
            -1 => (Resp::Array(None), next),
            n if n >= 0 => {
                let mut items = Vec::with_capacity((n as usize).min(1024));
                let mut pos = next;
                for _ in 0..n {
                    let Some((item, after)) = parse_at(buf, pos, depth + 1)? else { return Ok(None) };
                    items.push(item);
                    pos = after;
                }
                (Resp::Array(Some(items)), pos)
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
    }

    #[test]
    fn refuses_what_is_not_a_reply() {
        for bad in [
            &b"?x\r\n"[..],
            b"$3\r\nabcd\r\n",
            b":x\r\n",
            b"$-2\r\n",
            b"\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert_eq!(parse(bad), Err(Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

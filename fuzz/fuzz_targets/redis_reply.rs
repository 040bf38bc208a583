//! The Redis reply parser on arbitrary bytes never panics; the borrowed and
//! owned parsers agree; a reply read re-encodes to bytes that parse to the
//! same reply; and arbitrary commands packed parse back as their arguments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub_protocol::resp::{ReplyRef, pack, parse, parse_ref};

fuzz_target!(|input: (Vec<u8>, Vec<Vec<u8>>)| {
    let (raw, args) = input;
    let mut at = 0;
    while let Ok(Some((reply, used))) = parse_ref(&raw[at..]) {
        assert_eq!(parse(&raw[at..]), Ok(Some((reply.to_owned(), used))));
        let mut again = Vec::new();
        reply.encode(&mut again);
        assert_eq!(parse_ref(&again), Ok(Some((reply.clone(), again.len()))));
        at += used;
    }
    let mut command = Vec::new();
    pack(&mut command, &args);
    let (parsed, used) = parse_ref(&command).expect("a packed command parses").expect("complete");
    assert_eq!(used, command.len());
    let want: Vec<ReplyRef<'_>> = args.iter().map(|a| ReplyRef::Bulk(Some(a))).collect();
    assert_eq!(parsed, ReplyRef::Array(Some(want)));
});

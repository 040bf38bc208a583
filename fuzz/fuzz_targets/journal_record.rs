//! The durable log's record decoder on arbitrary bytes never panics, and
//! what it accepts re-encodes to the same bytes; arbitrary events and keys
//! are either refused by the encoder or decode back to themselves, however
//! many records sit back to back; any floor record decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub_protocol::EventId;
use ssehub_protocol::journal::{
    DropReason, FloorRecord, Record, RecordError, decode, encode_event, encode_floor, encode_key,
};

/// origin ms, last ms, the drop for unlisted topics, listed topics (hash, ms, seq, expired).
type Floor = Option<(u64, u64, Option<(u64, u64, bool)>, Vec<(u64, u64, u64, bool)>)>;

fuzz_target!(|input: (Vec<u8>, Vec<(u64, u64, Vec<String>, Vec<u8>)>, Option<(u64, [u8; 16], String)>, Floor)| {
    let (raw, events, key, floor) = input;
    // Decoding garbage: never a panic, and a record read is one that encodes identically.
    let mut at = 0;
    while let Ok((record, used)) = decode(&raw[at..]) {
        let mut again = Vec::new();
        match &record {
            Record::Event(e) => encode_event(&mut again, e.id, e.topics.iter().copied(), e.fields),
            Record::Key(k) => encode_key(&mut again, k.at_ms, k.fingerprint, k.key, &k.ids),
            Record::Floor(f) => encode_floor(&mut again, f),
        }
        .expect("a decoded record encodes");
        assert_eq!(again, raw[at..at + used]);
        at += used;
    }
    // Encoding: everything accepted comes back, in order, and nothing else.
    let mut log = Vec::new();
    let mut want = Vec::new();
    for (ms, seq, topics, fields) in &events {
        let id = EventId { ms: *ms, seq: *seq };
        if encode_event(&mut log, id, topics.iter().map(String::as_str), fields).is_ok() {
            want.push((id, topics.clone(), fields.clone()));
        }
    }
    let ids: Vec<EventId> = want.iter().map(|w| w.0).collect();
    let key_ok = key.as_ref().is_some_and(|(at, fp, k)| encode_key(&mut log, *at, *fp, k, &ids).is_ok());
    let mut rest = &log[..];
    for (id, topics, fields) in &want {
        let (record, used) = decode(rest).expect("an encoded event decodes");
        let Record::Event(e) = record else { panic!("not an event") };
        assert_eq!((e.id, &e.topics.iter().map(|t| t.to_string()).collect::<Vec<_>>(), e.fields), (*id, topics, &fields[..]));
        rest = &rest[used..];
    }
    if key_ok {
        let (record, used) = decode(rest).expect("an encoded key decodes");
        let Record::Key(k) = record else { panic!("not a key") };
        let (at, fp, name) = key.as_ref().expect("key");
        assert_eq!((k.at_ms, &k.fingerprint, k.key, &k.ids), (*at, fp, name.as_str(), &ids));
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    if let Some((origin, last, dropped, topics)) = floor {
        let why = |expired: bool| if expired { DropReason::Expired } else { DropReason::Evicted };
        let floor = FloorRecord {
            origin: EventId { ms: origin, seq: 0 },
            last: EventId { ms: last, seq: 1 },
            dropped: dropped.map(|(ms, seq, expired)| (EventId { ms, seq }, why(expired))),
            topics: topics.into_iter().map(|(h, ms, seq, expired)| (h, EventId { ms, seq }, why(expired))).collect(),
        };
        let start = log.len();
        encode_floor(&mut log, &floor).expect("a floor always encodes");
        let (record, used) = decode(&log[start..]).expect("an encoded floor decodes");
        assert_eq!((record, used), (Record::Floor(floor), log.len() - start));
        // Cut anywhere short, it is a torn record, never a shorter floor.
        for cut in [start, start + 1, (start + log.len()) / 2, log.len() - 1] {
            assert_eq!(decode(&log[start..cut]).map(|_| ()), Err(RecordError::Truncated));
        }
    }
});

use super::*;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use Ambiguity::*;

const BOTH: Ambiguity = ContentLengthAndTransferEncoding;

const CLTE: &[u8] =
    b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
/// Body text that would be flagged if it were read as a head.
const LOOKALIKE: &[u8] =
    b"\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Clean pipelined requests: a GET, a sized body holding a look-alike
/// head, chunked bodies with extensions, a look-alike chunk, trailers.
fn clean() -> Vec<u8> {
    let n = LOOKALIKE.len();
    let mut s = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n".to_vec();
    s.extend(format!("POST / HTTP/1.1\r\ncontent-length: {n}\r\n\r\n").bytes());
    s.extend(LOOKALIKE);
    s.extend(b"POST / HTTP/1.1\r\nTE: trailers\r\nTransfer-Encoding: Chunked\r\n\r\n");
    s.extend(format!("3;n=\"x;y\"\r\nabc\r\n{n:X} \t;e\r\n").bytes());
    s.extend(LOOKALIKE);
    s.extend(b"\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\nGET /bare-lf HTTP/1.1\nHost: a\n\n");
    s
}

/// Feeds `stream` cut at `cuts`; the final state and every flag reported.
fn scan(stream: &[u8], cuts: &[usize]) -> (State, Vec<Ambiguity>) {
    let (mut scanner, mut flags, mut at) = (Scanner::new(DEFAULT_HEAD_LIMIT), vec![], 0);
    for &cut in cuts.iter().chain([&stream.len()]) {
        let cut = cut.clamp(at, stream.len());
        flags.extend(scanner.feed(&stream[at..cut]));
        at = cut;
    }
    (scanner.state, flags)
}

/// `stream` read whole and one byte per read, which must agree.
fn outcome(parts: &[&[u8]]) -> (State, Vec<Ambiguity>) {
    let stream = parts.concat();
    let whole = scan(&stream, &[]);
    assert_eq!(whole, scan(&stream, &(1..stream.len()).collect::<Vec<_>>()));
    whole
}

#[test]
fn ambiguous_framing_is_flagged_in_any_order_and_case() {
    let (not, twice) = (TransferEncodingNotChunked, RepeatedTransferEncoding);
    let cases: [(&[u8], _); 9] = [
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", BOTH),
        (b"transfer-encoding: chunked\r\ncontent-length: 5\r\n", BOTH),
        (
            b"CONTENT-LENGTH: 1\r\ncontent-length: 1\r\nTRANSFER-ENCODING: CHUNKED\r\n",
            BOTH,
        ),
        (b"Content-Length: x\r\nTransfer-Encoding: gzip\r\n", BOTH),
        (b"Transfer-Encoding: chunked\nContent-Length: 0\n", BOTH),
        (b"Transfer-Encoding: gzip, chunked\r\n", not),
        (b"Transfer-Encoding: chunked, chunked\r\n", not),
        (
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            twice,
        ),
        (
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            twice,
        ),
    ];
    for (headers, want) in cases {
        let got = outcome(&[b"POST / HTTP/1.1\r\n", headers, b"\r\n0\r\n\r\n"]);
        let text = String::from_utf8_lossy(headers);
        assert_eq!(got, (State::Flagged(want), vec![want]), "{text:?}");
        assert!(want.reason().contains("Transfer-Encoding"));
    }
}

#[test]
fn clean_pipeline_is_followed_to_its_end_not_flagged() {
    assert_eq!(outcome(&[&clean()]), (State::Head, vec![]));
    // Followed, not skipped: an ambiguous request after it is seen.
    assert_eq!(outcome(&[&clean(), CLTE]).1, vec![BOTH]);
}

#[test]
fn ambiguity_is_reported_once_when_its_head_completes_and_the_first_sticks() {
    let stream = [&b"GET / HTTP/1.1\r\n\r\n"[..], CLTE].concat();
    let end = stream.len() - b"0\r\n\r\n".len();
    let mut scanner = Scanner::new(DEFAULT_HEAD_LIMIT);
    assert_eq!(scanner.feed(&stream[..end - 1]), None, "no blank line yet");
    assert_eq!(scanner.feed(&stream[end - 1..]), Some(BOTH));
    assert_eq!(scanner.feed(CLTE), None, "reported once");
    let state = FramingState::default();
    assert_eq!(state.ambiguous(), None);
    state.record(RepeatedTransferEncoding);
    state.record(ContentLengthAndTransferEncoding);
    assert_eq!(state.ambiguous(), Some(RepeatedTransferEncoding));
}

#[test]
fn h2_preface_stops_scanning_and_near_misses_are_http1() {
    assert_eq!(outcome(&[H2_PREFACE, CLTE]), (State::Stopped, vec![]));
    // A PRI request line in HTTP/1.1 is a head like any other, whole.
    let pri = b"PRI * HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
    assert_eq!(outcome(&[pri, CLTE]).1, vec![BOTH]);
    // HTTP/2.0 in an HTTP/1 head: hyper refuses it.
    let near = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n";
    assert_eq!(outcome(&[near, CLTE]), (State::Stopped, vec![]));
}

#[test]
fn connect_and_upgrade_keep_being_watched() {
    // hyper keeps reading HTTP/1 after a CONNECT it answered 405, or an
    // Upgrade it answered without 101: what follows is a request.
    for first in [
        &b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"[..],
        b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ] {
        assert_eq!(outcome(&[first, CLTE]).1, vec![BOTH]);
        // After an accepted upgrade, frames are not a head: stop quietly.
        let frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
        assert_eq!(outcome(&[first, frame, CLTE]), (State::Stopped, vec![]));
    }
}

#[test]
fn bytes_hyper_refuses_stop_scanning() {
    let refused: [&[u8]; 7] = [
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nb\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length : 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
    ];
    for stream in refused {
        let text = String::from_utf8_lossy(stream);
        assert_eq!(
            outcome(&[stream, CLTE]),
            (State::Stopped, vec![]),
            "{text:?}"
        );
    }
}

#[test]
fn heads_over_the_limit_stop_scanning_and_free_their_buffer() {
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.resize(DEFAULT_HEAD_LIMIT + 1, b'a');
    let got = outcome(&[&big, b"\r\n\r\n", CLTE]);
    assert_eq!(got, (State::Stopped, vec![]));
    let mut scanner = Scanner::new(DEFAULT_HEAD_LIMIT);
    scanner.feed(&big);
    assert_eq!(
        (scanner.state, scanner.head.capacity()),
        (State::Stopped, 0)
    );
}

proptest! {
    #[test]
    fn any_split_gives_the_same_outcome(mut cuts in prop::collection::vec(0usize..800, 0..40)) {
        cuts.sort_unstable();
        prop_assert_eq!(scan(&clean(), &cuts), (State::Head, vec![]));
        let stream = [&clean()[..], CLTE].concat();
        prop_assert_eq!(scan(&stream, &cuts).1, vec![BOTH]);
    }
}

#[tokio::test]
async fn reads_pass_through_unchanged_and_record_the_ambiguity() {
    for (stream, want) in [(clean(), None), ([&clean()[..], CLTE].concat(), Some(BOTH))] {
        let state = Arc::new(FramingState::default());
        let mut watch = FramingWatch::new(&stream[..], state.clone());
        let (mut out, mut buf) = (Vec::new(), [0u8; 7]);
        while let n @ 1.. = watch.read(&mut buf).await.unwrap() {
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!((out, state.ambiguous()), (stream, want));
    }
}

#[tokio::test]
async fn writes_pass_through_vectored_when_the_inner_io_is() {
    let (near, mut far) = tokio::io::duplex(64);
    let mut watch = FramingWatch::new(near, Arc::default());
    assert!(watch.is_write_vectored(), "a duplex stream writes vectored");
    let want = b"HTTP/1.1 200 OK\r\n\r\n";
    let parts = [io::IoSlice::new(&want[..17]), io::IoSlice::new(&want[17..])];
    // Not vectored, only the first slice would go in one call.
    assert_eq!(watch.write_vectored(&parts).await.unwrap(), want.len());
    watch.shutdown().await.unwrap();
    let mut got = Vec::new();
    far.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, want);
}

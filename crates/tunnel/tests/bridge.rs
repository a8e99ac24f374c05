//! The bridge against a hand-rolled WebSocket client, so frames can be as odd as a peer may send:
//! text, fragmented, oversized, floods of pings, slow or broken request heads.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use flyte_tunnel::Header;
use flyte_tunnel::bridge::{BridgeConfig, Target};
use flyte_tunnel::client::ClientOptions;

/// A TCP echo server standing in for the SSH server, and a bridge in front of it.
struct Setup {
    bridge: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn setup(configure: impl FnOnce(&mut BridgeConfig)) -> Setup {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let echo = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let echo_addr = echo.local_addr().unwrap();
    runtime.spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let mut config = BridgeConfig::new(Target::Tcp(echo_addr));
    configure(&mut config);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let bridge = listener.local_addr().unwrap();
    runtime.spawn(flyte_tunnel::bridge::serve(listener, Arc::new(config)));
    Setup {
        bridge,
        _runtime: runtime,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    // A bound on every read: a hang fails the test instead of stalling the run.
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Send a request head; return the status line and the stream positioned after the head.
fn request(stream: &mut TcpStream, extra_headers: &str) -> String {
    write!(
        stream,
        "GET /whatever?target_port=6060 HTTP/1.1\r\nHost: x\r\n{extra_headers}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed during the response head"
        );
        head.push(byte[0]);
    }
    String::from_utf8(head)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn upgraded(setup: &Setup) -> TcpStream {
    let mut stream = connect(setup.bridge);
    assert_eq!(
        request(&mut stream, UPGRADE),
        "HTTP/1.1 101 Switching Protocols"
    );
    stream
}

/// Write one client frame (masked, as RFC 6455 requires of clients).
fn send_frame(stream: &mut TcpStream, fin: bool, opcode: u8, payload: &[u8]) {
    let mut frame = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | u8::try_from(len).unwrap());
    } else if let Ok(len) = u16::try_from(len) {
        frame.push(0x80 | 0x7e); // 126: a 16-bit length follows
        frame.extend_from_slice(&len.to_be_bytes());
    } else {
        frame.push(0x80 | 0x7f); // 127: a 64-bit length follows
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).unwrap();
}

/// Read one server frame: (opcode, payload). Servers do not mask.
fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    stream.read_exact(&mut payload).ok()?;
    Some((head[0] & 0x0f, payload))
}

/// Read data frames until `want` bytes of payload arrived, skipping control frames.
fn read_data(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut data = Vec::new();
    while data.len() < want {
        let (opcode, payload) = read_frame(stream).expect("the bridge closed before echoing");
        if opcode == 2 {
            data.extend(payload);
        }
    }
    data
}

#[test]
fn binary_and_text_frames_are_forwarded_as_bytes() {
    let setup = setup(|_| {});
    let mut ws = upgraded(&setup);
    send_frame(&mut ws, true, 2, b"\x00\x01binary");
    assert_eq!(read_data(&mut ws, 8), b"\x00\x01binary");
    // Flyte's bridge forwards text frames' payload too.
    send_frame(&mut ws, true, 1, b"text");
    assert_eq!(read_data(&mut ws, 4), b"text");
}

#[test]
fn fragmented_messages_are_reassembled() {
    let setup = setup(|_| {});
    let mut ws = upgraded(&setup);
    send_frame(&mut ws, false, 2, b"hel");
    send_frame(&mut ws, false, 0, b"lo ");
    send_frame(&mut ws, true, 0, b"world");
    assert_eq!(read_data(&mut ws, 11), b"hello world");
}

#[test]
fn pings_get_pongs_and_a_flood_does_not_stop_the_data() {
    let setup = setup(|_| {});
    let mut ws = upgraded(&setup);
    send_frame(&mut ws, true, 9, b"are you there");
    let (opcode, payload) = read_frame(&mut ws).unwrap();
    assert_eq!((opcode, payload.as_slice()), (10, &b"are you there"[..]));
    for i in 0..2000u32 {
        send_frame(&mut ws, true, 9, &i.to_be_bytes());
    }
    send_frame(&mut ws, true, 2, b"after the flood");
    assert_eq!(read_data(&mut ws, 15), b"after the flood");
}

#[test]
fn a_frame_over_the_client_limit_closes_the_connection() {
    let setup = setup(|_| {});
    let mut ws = upgraded(&setup);
    // Announce one byte over the limit and send nothing more: the header alone is refused, so
    // no client can make the bridge buffer more than the limit per connection.
    let mut frame = vec![0x82, 0x80 | 0x7f];
    let over = u64::try_from(flyte_tunnel::bridge::MAX_CLIENT_MESSAGE_BYTES).unwrap() + 1;
    frame.extend_from_slice(&over.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    ws.write_all(&frame).unwrap();
    // The bridge closes with 1009 (message too big) instead of waiting for the rest.
    let (opcode, payload) = read_frame(&mut ws).expect("a close frame");
    assert_eq!(opcode, 8);
    assert_eq!(
        u16::from_be_bytes([payload[0], payload[1]]),
        1009,
        "{:?}",
        String::from_utf8_lossy(&payload[2..])
    );
}

#[test]
fn plain_requests_are_the_readiness_probe() {
    let setup = setup(|_| {});
    let mut stream = connect(setup.bridge);
    assert_eq!(request(&mut stream, ""), "HTTP/1.1 200 OK");
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    assert_eq!(body, "ok");
}

#[test]
fn an_upgrade_without_a_key_is_a_bad_request() {
    let setup = setup(|_| {});
    let mut stream = connect(setup.bridge);
    assert_eq!(
        request(&mut stream, "Upgrade: websocket\r\nConnection: Upgrade\r\n"),
        "HTTP/1.1 400 Bad Request"
    );
}

#[test]
fn garbage_gets_400_and_a_slow_head_is_dropped() {
    let setup = setup(|c| c.head_timeout = Duration::from_millis(300));
    let mut stream = connect(setup.bridge);
    stream
        .write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    // Half a head, then silence: the bridge hangs up (read returns 0) instead of waiting forever.
    let mut slow = connect(setup.bridge);
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(slow.read(&mut buf).unwrap(), 0);
}

#[test]
fn a_bearer_token_is_required_when_configured() {
    let setup = setup(|c| c.bearer_token = Some("s3cret-token".to_owned()));
    for (header, want) in [
        ("", "HTTP/1.1 401 Unauthorized"),
        (
            "Authorization: Bearer wrong\r\n",
            "HTTP/1.1 401 Unauthorized",
        ),
        (
            "Authorization: s3cret-token\r\n",
            "HTTP/1.1 401 Unauthorized",
        ),
        (
            "Authorization: Bearer s3cret-token\r\n",
            "HTTP/1.1 101 Switching Protocols",
        ),
    ] {
        let mut stream = connect(setup.bridge);
        assert_eq!(
            request(&mut stream, &format!("{UPGRADE}{header}")),
            want,
            "{header:?}"
        );
    }
}

#[test]
fn a_dead_target_is_a_502_not_a_hang() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let setup = setup(|c| c.target = Target::Tcp(closed));
    let mut stream = connect(setup.bridge);
    assert_eq!(request(&mut stream, UPGRADE), "HTTP/1.1 502 Bad Gateway");
}

#[test]
fn routes_pick_targets_by_path_and_a_verifier_checks_tokens() {
    let plain = setup(|_| {});
    // The echo target of `plain`'s bridge is not reachable from here; route to `plain` itself
    // through TCP: any concrete target proves the routing.
    let echo_bridge = plain.bridge;
    let routed = setup(move |c| {
        c.target = Target::Route(Arc::new(move |path: &str| {
            (path.starts_with("/v1/debug/p/d/r1/") || path.starts_with("/v1/debug/p/d/r2/"))
                .then(|| Target::Tcp(echo_bridge))
        }));
        // "signed-ok" opens any route; "r1-only" the one path, given without the query.
        c.verifier = Some(Arc::new(|token: &str, path: &str| {
            token == "signed-ok" || (token == "r1-only" && path == "/v1/debug/p/d/r1/a0")
        }));
    });
    let upgrade_with = |path: &str, token: &str| {
        let mut stream = connect(routed.bridge);
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\n{UPGRADE}Authorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).unwrap(), 1);
            head.push(byte[0]);
        }
        String::from_utf8(head)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        upgrade_with("/v1/debug/p/d/r1/a0", "signed-ok"),
        "HTTP/1.1 101 Switching Protocols"
    );
    assert_eq!(
        upgrade_with("/v1/debug/p/d/other/a0", "signed-ok"),
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        upgrade_with("/v1/debug/p/d/r1/a0", "forged"),
        "HTTP/1.1 401 Unauthorized"
    );
    for (path, status) in [
        ("/v1/debug/p/d/r1/a0", "HTTP/1.1 101 Switching Protocols"),
        (
            "/v1/debug/p/d/r1/a0?resume=1",
            "HTTP/1.1 101 Switching Protocols",
        ),
        ("/v1/debug/p/d/r2/a0", "HTTP/1.1 401 Unauthorized"),
        ("/v1/debug/p/d/r1/a1", "HTTP/1.1 401 Unauthorized"),
    ] {
        assert_eq!(upgrade_with(path, "r1-only"), status, "{path}");
    }
}

/// (bridge, path, token, the key found or words of the error)
type HostKeyCase<'a> = (
    SocketAddr,
    &'a str,
    Option<&'a str>,
    Result<Option<&'a str>, &'a str>,
);

/// `?ssh-host-key` asks for the SSH server's key, authorized like an upgrade; our client reads it,
/// and takes a server that does not know the query (the readiness `ok`) as publishing none.
#[test]
fn the_host_key_is_served_to_token_holders_and_fetched_by_the_client() {
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    let guarded = setup(|c| {
        c.bearer_token = Some("s3cret-token".to_owned());
        c.host_key = Some(Arc::new(|path: &str| {
            (path == "/v1/debug/r/a0").then(|| KEY.to_owned())
        }));
    });
    let unpublished = setup(|_| {});
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fetch = |bridge: SocketAddr, path: &str, token: Option<&str>| {
        let mut options = ClientOptions::new(format!("ws://{bridge}{path}"));
        options.headers = token
            .map(|t| Header {
                name: "Authorization".to_owned(),
                value: format!("Bearer {t}"),
            })
            .into_iter()
            .collect();
        runtime.block_on(flyte_tunnel::client::fetch_host_key(&options))
    };
    let cases: [HostKeyCase<'_>; 6] = [
        (
            guarded.bridge,
            "/v1/debug/r/a0",
            Some("s3cret-token"),
            Ok(Some(KEY)),
        ),
        // Another query on the route stays: the key query is added to it.
        (
            guarded.bridge,
            "/v1/debug/r/a0?x=1",
            Some("s3cret-token"),
            Ok(Some(KEY)),
        ),
        (
            guarded.bridge,
            "/v1/debug/r/a0",
            Some("wrong"),
            Err("refused"),
        ),
        (guarded.bridge, "/v1/debug/r/a0", None, Err("refused")),
        (guarded.bridge, "/elsewhere", Some("s3cret-token"), Ok(None)),
        (unpublished.bridge, "/any", None, Ok(None)),
    ];
    for (bridge, path, token, want) in cases {
        let got = fetch(bridge, path, token);
        match (want, &got) {
            (Ok(key), Ok(found)) => assert_eq!(found.as_deref(), key, "{path} {token:?}"),
            (Err(words), Err(e)) => assert!(e.to_string().contains(words), "{path}: {e}"),
            _ => panic!("{path} {token:?}: {got:?}"),
        }
    }
    // A server that does not know the query answers the readiness probe: not a key.
    let mut stream = connect(unpublished.bridge);
    write!(stream, "GET /any HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
}

/// Whatever framing the server picks, the key is read: a `Content-Length` answer or a chunked
/// one from a server that keeps the connection open (ignoring `Connection: close`), or an
/// answer that ends when the server closes.
#[test]
fn host_key_answers_are_read_in_every_http_framing() {
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    let body = format!("{KEY}\n");
    let (first, rest) = body.split_at(20);
    // (framing, the raw answer, whether the server holds the connection open afterwards)
    let cases = [
        (
            "content-length, kept open",
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            true,
        ),
        (
            "chunked, kept open",
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{rest}\r\n0\r\n\r\n",
                first.len(),
                rest.len()
            ),
            true,
        ),
        (
            "until close",
            format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}"),
            false,
        ),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (framing, answer, hold) in cases {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head).unwrap();
            stream.write_all(answer.as_bytes()).unwrap();
            if hold {
                // Hold the connection until the client has gone.
                let mut rest = [0u8; 16];
                let _ = stream.read(&mut rest);
            }
        });
        let mut options = ClientOptions::new(format!("ws://{address}/route"));
        options.connect_timeout = Duration::from_secs(20);
        let key = runtime
            .block_on(flyte_tunnel::client::fetch_host_key(&options))
            .unwrap();
        assert_eq!(key.as_deref(), Some(KEY), "{framing}");
        server.join().unwrap();
    }
}

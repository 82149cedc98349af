//! A minimal in-process RTMP server for unit tests of the publish client and the output
//! task (no nginx needed): answers the publish sequence, pings the client, and reports
//! every message it receives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::amf0::{self, Amf0Value};
use super::chunk::{self, ChunkReader, ChunkWriter, RtmpMessage};

/// How the mock behaves.
#[derive(Debug, Clone, Default)]
pub struct MockBehaviour {
    /// Answer `publish` with `NetStream.Publish.BadName`.
    pub reject_publish: bool,
    /// Close the connection after this many audio/video messages.
    pub close_after_media: Option<usize>,
    /// Stop reading for a while after this many audio/video messages (back-pressure).
    pub pause_after_media: Option<(usize, std::time::Duration)>,
}

/// What the mock saw, per connection.
#[derive(Debug)]
#[allow(dead_code)]
pub enum MockEvent {
    /// A new connection finished the handshake (its index).
    Connected(usize),
    /// A message from the client on connection `.0`.
    Message(usize, RtmpMessage),
    /// Connection `.0` ended.
    Closed(usize),
}

/// Starts the mock on a free port; returns the port and the event receiver.
pub async fn start(behaviour: MockBehaviour) -> (u16, mpsc::UnboundedReceiver<MockEvent>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((sock, _)) = listener.accept().await {
            let tx = tx.clone();
            let b = behaviour.clone();
            tokio::spawn(async move {
                let _ = session(sock, n, b, &tx).await;
                let _ = tx.send(MockEvent::Closed(n));
            });
            n += 1;
        }
    });
    (port, rx)
}

fn command(w: &mut ChunkWriter, out: &mut Vec<u8>, sid: u32, v: &[Amf0Value]) {
    w.write_payload(
        out,
        3,
        0,
        chunk::MSG_COMMAND_AMF0,
        sid,
        &amf0::encode_all(v),
    );
}

async fn session(
    mut sock: TcpStream,
    n: usize,
    b: MockBehaviour,
    tx: &mpsc::UnboundedSender<MockEvent>,
) -> std::io::Result<()> {
    let mut c0c1 = vec![0u8; 1537];
    sock.read_exact(&mut c0c1).await?;
    let mut s = vec![3u8];
    s.extend_from_slice(&[7u8; 1536]); // S1
    s.extend_from_slice(&c0c1[1..]); // S2 echoes C1
    sock.write_all(&s).await?;
    let mut c2 = vec![0u8; 1536];
    sock.read_exact(&mut c2).await?;
    assert_eq!(&c2[..], &[7u8; 1536][..], "C2 must echo S1");
    let _ = tx.send(MockEvent::Connected(n));

    let mut reader = ChunkReader::new();
    let mut writer = ChunkWriter::new();
    let mut buf = Vec::new();
    let mut media = 0usize;
    let mut tmp = vec![0u8; 65536];
    loop {
        let k = sock.read(&mut tmp).await?;
        if k == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..k]);
        let mut out = Vec::new();
        while let Some((used, msg)) = reader.read_chunk(&buf).expect("client chunk stream") {
            buf.drain(..used);
            let Some(msg) = msg else { continue };
            match msg.type_id {
                chunk::MSG_SET_CHUNK_SIZE => {
                    let v = u32::from_be_bytes(msg.payload[..4].try_into().unwrap());
                    reader.set_chunk_size(v as usize);
                    let _ = tx.send(MockEvent::Message(n, msg));
                }
                chunk::MSG_COMMAND_AMF0 => {
                    let cmd = amf0::decode_all(&msg.payload).expect("client AMF0");
                    let name = cmd[0].as_str().unwrap_or("").to_owned();
                    let txn = cmd.get(1).cloned().unwrap_or(Amf0Value::Number(0.0));
                    match name.as_str() {
                        "connect" => {
                            // Control messages first, like real servers; a small chunk size
                            // from us, and a ping the client must answer.
                            writer.write_payload(
                                &mut out,
                                2,
                                0,
                                chunk::MSG_WINDOW_ACK_SIZE,
                                0,
                                &5_000_000u32.to_be_bytes(),
                            );
                            writer.write_payload(
                                &mut out,
                                2,
                                0,
                                chunk::MSG_SET_PEER_BANDWIDTH,
                                0,
                                &[0, 0x4C, 0x4B, 0x40, 2],
                            );
                            writer.write_payload(
                                &mut out,
                                2,
                                0,
                                chunk::MSG_SET_CHUNK_SIZE,
                                0,
                                &100u32.to_be_bytes(),
                            );
                            writer.set_chunk_size(100);
                            command(
                                &mut writer,
                                &mut out,
                                0,
                                &[
                                    Amf0Value::str("_result"),
                                    txn,
                                    Amf0Value::Object(vec![(
                                        "fmsVer".into(),
                                        Amf0Value::str("FMS/3,0,1,123"),
                                    )]),
                                    Amf0Value::Object(vec![
                                        ("level".into(), Amf0Value::str("status")),
                                        (
                                            "code".into(),
                                            Amf0Value::str("NetConnection.Connect.Success"),
                                        ),
                                        // Long enough to span several 100-byte chunks.
                                        ("description".into(), Amf0Value::String("x".repeat(300))),
                                    ]),
                                ],
                            );
                            command(
                                &mut writer,
                                &mut out,
                                0,
                                &[
                                    Amf0Value::str("onBWDone"),
                                    Amf0Value::Number(0.0),
                                    Amf0Value::Null,
                                ],
                            );
                            writer.write_payload(
                                &mut out,
                                2,
                                0,
                                chunk::MSG_USER_CONTROL,
                                0,
                                &[0, 6, 0, 0, 0x30, 0x39],
                            );
                        }
                        "createStream" => command(
                            &mut writer,
                            &mut out,
                            0,
                            &[
                                Amf0Value::str("_result"),
                                txn,
                                Amf0Value::Null,
                                Amf0Value::Number(1.0),
                            ],
                        ),
                        "publish" => {
                            let (level, code) = if b.reject_publish {
                                ("error", "NetStream.Publish.BadName")
                            } else {
                                ("status", "NetStream.Publish.Start")
                            };
                            command(
                                &mut writer,
                                &mut out,
                                1,
                                &[
                                    Amf0Value::str("onStatus"),
                                    Amf0Value::Number(0.0),
                                    Amf0Value::Null,
                                    Amf0Value::Object(vec![
                                        ("level".into(), Amf0Value::str(level)),
                                        ("code".into(), Amf0Value::str(code)),
                                        ("description".into(), Amf0Value::str("mock")),
                                    ]),
                                ],
                            );
                        }
                        _ => {}
                    }
                    let _ = tx.send(MockEvent::Message(n, msg));
                }
                chunk::MSG_AUDIO | chunk::MSG_VIDEO => {
                    media += 1;
                    let _ = tx.send(MockEvent::Message(n, msg));
                    if b.close_after_media.is_some_and(|m| media >= m) {
                        sock.write_all(&out).await?;
                        return Ok(());
                    }
                    if let Some((m, d)) = b.pause_after_media {
                        if media == m {
                            tokio::time::sleep(d).await;
                        }
                    }
                }
                _ => {
                    let _ = tx.send(MockEvent::Message(n, msg));
                }
            }
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
        }
    }
}

//! Publishing: the handshake and the command sequence `connect` → `releaseStream`/
//! `FCPublish` → `createStream` → `publish`, each step under the connection's deadline.

use super::*;

impl RtmpPublisher {
    pub(super) async fn connect_inner(
        url: &RtmpUrl,
        io_timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<Self, RtmpError> {
        let stream =
            tokio::time::timeout_at(deadline, TcpStream::connect((url.host.as_str(), url.port)))
                .await
                .map_err(|_| RtmpError::Timeout("connect (TCP)"))??;
        stream.set_nodelay(true)?;
        let mut p = RtmpPublisher {
            stream,
            writer: ChunkWriter::new(),
            reader: ChunkReader::new(),
            rbuf: Vec::with_capacity(READ_SIZE),
            rpos: 0,
            backlog: false,
            partial_deadline: None,
            connect_deadline: Some(deadline),
            last_ping_answer: None,
            wbuf: Vec::with_capacity(64 * 1024),
            pending: Vec::new(),
            stream_id: 0,
            stream_name: url.stream.clone(),
            bytes_sent: 0,
            bytes_received: 0,
            last_ack_sent: 0,
            peer_window: OUR_WINDOW_ACK,
            io_timeout,
        };
        p.handshake().await?;
        debug!(url = %url.redacted(), "RTMP handshake done");

        // Set Chunk Size first, then connect.
        let mut out = std::mem::take(&mut p.wbuf);
        p.writer.write_payload(
            &mut out,
            CSID_CONTROL,
            0,
            chunk::MSG_SET_CHUNK_SIZE,
            0,
            &(OUT_CHUNK_SIZE as u32).to_be_bytes(),
        );
        p.wbuf = out;
        p.writer.set_chunk_size(OUT_CHUNK_SIZE);
        let tc_url = url.tc_url();
        p.queue_command(
            0,
            &[
                Amf0Value::str("connect"),
                Amf0Value::Number(1.0),
                Amf0Value::Object(vec![
                    ("app".into(), Amf0Value::str(&url.app)),
                    ("type".into(), Amf0Value::str("nonprivate")),
                    ("flashVer".into(), Amf0Value::str(FLASH_VER)),
                    ("tcUrl".into(), Amf0Value::String(tc_url)),
                ]),
            ],
        );
        p.flush().await?;
        p.wait_result(1.0, "connect", "connect (connect reply)")
            .await?;
        debug!("RTMP connect accepted");

        let name = Amf0Value::str(&url.stream);
        p.queue_command(
            0,
            &[
                Amf0Value::str("releaseStream"),
                Amf0Value::Number(2.0),
                Amf0Value::Null,
                name.clone(),
            ],
        );
        p.queue_command(
            0,
            &[
                Amf0Value::str("FCPublish"),
                Amf0Value::Number(3.0),
                Amf0Value::Null,
                name.clone(),
            ],
        );
        p.queue_command(
            0,
            &[
                Amf0Value::str("createStream"),
                Amf0Value::Number(4.0),
                Amf0Value::Null,
            ],
        );
        p.flush().await?;
        let res = p
            .wait_result(4.0, "createStream", "connect (createStream reply)")
            .await?;
        let sid = res
            .get(3)
            .and_then(Amf0Value::as_number)
            .ok_or_else(|| RtmpError::Rejected {
                step: "createStream",
                reason: "no stream id in _result".into(),
            })?;
        if !(0.0..=u32::MAX as f64).contains(&sid) {
            return Err(RtmpError::Rejected {
                step: "createStream",
                reason: format!("invalid stream id {sid}"),
            });
        }
        p.stream_id = sid as u32;

        p.queue_stream_command(&[
            Amf0Value::str("publish"),
            Amf0Value::Number(5.0),
            Amf0Value::Null,
            name,
            Amf0Value::str("live"),
        ]);
        p.flush().await?;
        loop {
            let cmd = p.next_command("connect (publish reply)").await?;
            if cmd.first().and_then(Amf0Value::as_str) == Some("onStatus") {
                let (code, level) = (status_field(&cmd, "code"), status_field(&cmd, "level"));
                if code == "NetStream.Publish.Start" {
                    break;
                }
                if level == "error" || code.contains("Failed") || code.contains("BadName") {
                    let desc = status_field(&cmd, "description");
                    return Err(RtmpError::Rejected {
                        step: "publish",
                        reason: format!("{code} {desc}").trim().to_owned(),
                    });
                }
            } else if cmd.first().and_then(Amf0Value::as_str) == Some("_error")
                && cmd.get(1).and_then(Amf0Value::as_number) == Some(5.0)
            {
                return Err(RtmpError::Rejected {
                    step: "publish",
                    reason: describe_error(&cmd),
                });
            }
        }
        debug!(url = %url.redacted(), stream_id = p.stream_id, "RTMP publishing");
        p.connect_deadline = None;
        Ok(p)
    }

    async fn handshake(&mut self) -> Result<(), RtmpError> {
        let mut c0c1 = vec![0u8; 1 + 1536];
        c0c1[0] = 3;
        // time (4 bytes) = 0, zero (4 bytes), then random.
        rand::thread_rng().fill_bytes(&mut c0c1[9..]);
        self.write_bytes(&c0c1).await?;
        let mut s0s1 = vec![0u8; 1 + 1536];
        self.read_exact(&mut s0s1, "connect (handshake)").await?;
        if s0s1[0] != 3 {
            return Err(RtmpError::Handshake(format!(
                "server version {} (expected 3)",
                s0s1[0]
            )));
        }
        // C2 echoes S1.
        self.write_bytes(&s0s1[1..]).await?;
        let mut s2 = vec![0u8; 1536];
        self.read_exact(&mut s2, "connect (handshake)").await?;
        self.bytes_received += (s0s1.len() + s2.len()) as u64;
        Ok(())
    }
}

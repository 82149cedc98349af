//! Untrusted bytes from an RTMP ingest server: fed to the client's chunk reader in pieces
//! whose sizes come from the input (chunk size from the first byte too), each completed
//! message's payload and the whole input to the AMF0 decoder. Never a panic, and the
//! reader's limits (per message, buffered in all, chunk streams) always hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../mixer/src/mux/amf0.rs"]
mod amf0;
#[allow(dead_code)]
#[path = "../../src/output/chunk.rs"]
mod chunk;

use chunk::ChunkReader;

// The same code as `fuzz_one` in `src/output/chunk.rs`'s tests.
fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut r = ChunkReader::new();
    if first & 1 == 1 {
        r.set_chunk_size(usize::from(first >> 1) + 1);
    }
    let limits = r.limits();
    let mut buf: Vec<u8> = Vec::new();
    let step = usize::from(first >> 4) + 1;
    for piece in rest.chunks(step) {
        buf.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            match r.read_chunk(&buf[pos..]) {
                Ok(None) => break,
                Ok(Some((n, msg))) => {
                    assert!(n > 0 && pos + n <= buf.len());
                    pos += n;
                    if let Some(m) = msg {
                        assert!(m.payload.len() <= limits.max_message_len);
                        let _ = amf0::decode_all(&m.payload);
                    }
                }
                Err(_) => return,
            }
            assert!(r.buffered() <= limits.max_buffered);
            assert!(r.chunk_streams() <= limits.max_chunk_streams);
        }
        buf.drain(..pos);
    }
    let _ = amf0::decode_all(rest);
});

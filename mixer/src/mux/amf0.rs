//! AMF0 (Action Message Format 0) values: the subset RTMP commands and FLV metadata use.

use thiserror::Error;

/// An AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// IEEE-754 double (marker 0x00).
    Number(f64),
    /// Boolean (marker 0x01).
    Boolean(bool),
    /// UTF-8 string (marker 0x02, or 0x0C for long strings).
    String(String),
    /// Anonymous object: ordered key/value pairs (marker 0x03).
    Object(Vec<(String, Amf0Value)>),
    /// Null (marker 0x05).
    Null,
    /// Undefined (marker 0x06).
    Undefined,
    /// ECMA array: ordered key/value pairs (marker 0x08).
    EcmaArray(Vec<(String, Amf0Value)>),
    /// Strict array (marker 0x0A).
    StrictArray(Vec<Amf0Value>),
    /// Date: milliseconds since the epoch and a time-zone offset (marker 0x0B).
    Date(f64, i16),
}

impl Amf0Value {
    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a number.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The value of `key` if this is an object or ECMA array that has it.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => {
                p.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// A string value.
    pub fn str(s: &str) -> Amf0Value {
        Amf0Value::String(s.to_owned())
    }
}

/// Errors decoding AMF0.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Amf0Error {
    /// The input ended inside a value.
    #[error("AMF0 input truncated")]
    Truncated,
    /// A type marker this decoder does not support.
    #[error("unsupported AMF0 marker 0x{0:02x}")]
    UnsupportedMarker(u8),
    /// A string that is not UTF-8.
    #[error("AMF0 string is not UTF-8")]
    BadUtf8,
    /// Objects nested deeper than the decoder allows.
    #[error("AMF0 nesting too deep")]
    TooDeep,
}

const MAX_DEPTH: usize = 32;

/// Appends the encoding of `value` to `out`.
pub fn encode(out: &mut Vec<u8>, value: &Amf0Value) {
    match value {
        Amf0Value::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0Value::Boolean(b) => {
            out.push(0x01);
            out.push(u8::from(*b));
        }
        Amf0Value::String(s) => {
            if s.len() > 0xFFFF {
                out.push(0x0C);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            } else {
                out.push(0x02);
                write_short_string(out, s);
            }
        }
        Amf0Value::Object(props) => {
            out.push(0x03);
            write_props(out, props);
        }
        Amf0Value::Null => out.push(0x05),
        Amf0Value::Undefined => out.push(0x06),
        Amf0Value::EcmaArray(props) => {
            out.push(0x08);
            out.extend_from_slice(&(props.len() as u32).to_be_bytes());
            write_props(out, props);
        }
        Amf0Value::StrictArray(items) => {
            out.push(0x0A);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for v in items {
                encode(out, v);
            }
        }
        Amf0Value::Date(ms, tz) => {
            out.push(0x0B);
            out.extend_from_slice(&ms.to_be_bytes());
            out.extend_from_slice(&tz.to_be_bytes());
        }
    }
}

/// Encodes a sequence of values (e.g. a command: name, transaction id, args...).
pub fn encode_all(values: &[Amf0Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        encode(&mut out, v);
    }
    out
}

fn write_short_string(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(0xFFFF)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn write_props(out: &mut Vec<u8>, props: &[(String, Amf0Value)]) {
    for (k, v) in props {
        write_short_string(out, k);
        encode(out, v);
    }
    out.extend_from_slice(&[0x00, 0x00, 0x09]);
}

/// Decodes one value from the front of `input`, returning it and the bytes consumed.
pub fn decode(input: &[u8]) -> Result<(Amf0Value, usize), Amf0Error> {
    let mut r = Reader { buf: input, pos: 0 };
    let v = r.value(0)?;
    Ok((v, r.pos))
}

/// Decodes every value in `input` (e.g. a whole command message).
pub fn decode_all(input: &[u8]) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut r = Reader { buf: input, pos: 0 };
    let mut out = Vec::new();
    while r.pos < input.len() {
        out.push(r.value(0)?);
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Amf0Error> {
        let end = self.pos.checked_add(n).ok_or(Amf0Error::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(Amf0Error::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Amf0Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Amf0Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f64(&mut self) -> Result<f64, Amf0Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }
    fn string(&mut self, len: usize) -> Result<String, Amf0Error> {
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| Amf0Error::BadUtf8)
    }
    fn props(&mut self, depth: usize) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
        let mut props = Vec::new();
        loop {
            let klen = self.u16()? as usize;
            if klen == 0 {
                // Empty key: expect the object-end marker (be lenient if it is missing).
                if self.buf.get(self.pos) == Some(&0x09) {
                    self.pos += 1;
                }
                return Ok(props);
            }
            let k = self.string(klen)?;
            let v = self.value(depth + 1)?;
            props.push((k, v));
        }
    }
    fn value(&mut self, depth: usize) -> Result<Amf0Value, Amf0Error> {
        if depth > MAX_DEPTH {
            return Err(Amf0Error::TooDeep);
        }
        let marker = self.u8()?;
        Ok(match marker {
            0x00 => Amf0Value::Number(self.f64()?),
            0x01 => Amf0Value::Boolean(self.u8()? != 0),
            0x02 => {
                let n = self.u16()? as usize;
                Amf0Value::String(self.string(n)?)
            }
            0x03 => Amf0Value::Object(self.props(depth)?),
            0x05 => Amf0Value::Null,
            0x06 => Amf0Value::Undefined,
            0x08 => {
                let _count = self.u32()?;
                Amf0Value::EcmaArray(self.props(depth)?)
            }
            0x0A => {
                let n = self.u32()? as usize;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
            0x0B => {
                let ms = self.f64()?;
                let tz = self.u16()? as i16;
                Amf0Value::Date(ms, tz)
            }
            0x0C => {
                let n = self.u32()? as usize;
                Amf0Value::String(self.string(n)?)
            }
            m => return Err(Amf0Error::UnsupportedMarker(m)),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encode_known_bytes() {
        let b = encode_all(&[
            Amf0Value::str("connect"),
            Amf0Value::Number(1.0),
            Amf0Value::Object(vec![("app".into(), Amf0Value::str("live"))]),
            Amf0Value::Null,
            Amf0Value::Boolean(true),
        ]);
        let mut want = vec![0x02, 0x00, 0x07];
        want.extend_from_slice(b"connect");
        want.extend_from_slice(&[0x00, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0x03, 0x00, 0x03]);
        want.extend_from_slice(b"app");
        want.extend_from_slice(&[0x02, 0x00, 0x04]);
        want.extend_from_slice(b"live");
        want.extend_from_slice(&[0x00, 0x00, 0x09, 0x05, 0x01, 0x01]);
        assert_eq!(b, want);
    }

    #[test]
    fn roundtrip_all_types() {
        let vals = vec![
            Amf0Value::Number(-2.5),
            Amf0Value::Boolean(false),
            Amf0Value::str("héllo"),
            Amf0Value::Object(vec![
                ("a".into(), Amf0Value::Number(1.0)),
                (
                    "nested".into(),
                    Amf0Value::Object(vec![("b".into(), Amf0Value::Null)]),
                ),
            ]),
            Amf0Value::Null,
            Amf0Value::Undefined,
            Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(320.0))]),
            Amf0Value::StrictArray(vec![Amf0Value::Number(1.0), Amf0Value::str("x")]),
            Amf0Value::Date(1.0e12, 0),
            Amf0Value::String("L".repeat(70_000)),
        ];
        let bytes = encode_all(&vals);
        assert_eq!(decode_all(&bytes).unwrap(), vals);
        let (first, used) = decode(&bytes).unwrap();
        assert_eq!(first, Amf0Value::Number(-2.5));
        assert_eq!(used, 9);
        assert_eq!(
            vals[6].get("width").and_then(Amf0Value::as_number),
            Some(320.0)
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(decode(&[]), Err(Amf0Error::Truncated));
        assert_eq!(decode(&[0x00, 1, 2]), Err(Amf0Error::Truncated));
        assert_eq!(decode(&[0x02, 0x00, 0x05, b'a']), Err(Amf0Error::Truncated));
        assert_eq!(decode(&[0x11]), Err(Amf0Error::UnsupportedMarker(0x11)));
        assert_eq!(decode(&[0x02, 0x00, 0x01, 0xFF]), Err(Amf0Error::BadUtf8));
        assert_eq!(
            decode(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(Amf0Error::Truncated)
        );
        let deep = [0x0A, 0, 0, 0, 1].repeat(100);
        assert_eq!(decode(&deep), Err(Amf0Error::TooDeep));
    }
}

//! Trickle ICE over HTTP (RFC 9725 §4.3, RFC 8840 fragments): the pure part — parsing an
//! `application/trickle-ice-sdpfrag` body into what the session must do, and the session's
//! entity tag. No I/O: the handler in [`crate::http`] applies the result.

/// The media type of a trickle fragment.
pub const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// Most candidates one fragment may carry.
pub const MAX_CANDIDATES: usize = 64;

/// One candidate of a fragment, as a browser's `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `candidate:...` (the attribute value, without `a=`).
    pub candidate: String,
    /// The `a=mid` of its media section, if given.
    pub mid: Option<String>,
    /// Index of its media section (`m=` lines counted from 0), if in one.
    pub mline_index: Option<u16>,
}

/// A parsed fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// `a=ice-ufrag`, if present.
    pub ufrag: Option<String>,
    /// `a=ice-pwd`, if present.
    pub pwd: Option<String>,
    /// Candidates, in order.
    pub candidates: Vec<Candidate>,
    /// `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

impl Fragment {
    /// Does this fragment restart ICE, given the session's current remote credentials?
    pub fn is_restart(&self, current_ufrag: &str) -> bool {
        self.ufrag.as_deref().is_some_and(|u| u != current_ufrag)
    }
}

/// Why a fragment was refused (`400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad trickle fragment: {0}")]
pub struct FragmentError(pub String);

fn ice_char_ok(s: &str) -> bool {
    // RFC 8839 ice-char: ALPHA / DIGIT / "+" / "/"
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// A `candidate:` attribute value well-formed enough to hand to ICE (RFC 8839 §5.1):
/// foundation, component, transport, priority, address, port, `typ`, type, extensions.
fn candidate_ok(c: &str) -> bool {
    let Some(rest) = c.strip_prefix("candidate:") else {
        return false;
    };
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    f.len() >= 8
        && ice_char_ok(f[0])
        && f[1].parse::<u16>().is_ok_and(|n| (1..=256).contains(&n))
        && (f[2].eq_ignore_ascii_case("udp") || f[2].eq_ignore_ascii_case("tcp"))
        && f[3].parse::<u32>().is_ok()
        && !f[4].is_empty()
        && f[4].len() <= 255
        && f[5].parse::<u16>().is_ok()
        && f[6] == "typ"
        && matches!(f[7], "host" | "srflx" | "prflx" | "relay")
        && c.len() <= 1024
        && !c.chars().any(char::is_control)
}

/// Parses a fragment (RFC 8840 §4): session-level `a=ice-ufrag`/`a=ice-pwd`/`a=ice-options`,
/// `m=` lines with their `a=mid`, `a=candidate`, `a=end-of-candidates`; other attribute
/// lines are ignored. Anything malformed refuses the whole fragment, so a `400` leaves the
/// session untouched.
pub fn parse(body: &str) -> Result<Fragment, FragmentError> {
    let err = |m: String| Err(FragmentError(m));
    if body.len() > 64 * 1024 {
        return err("over 64 KiB".into());
    }
    let mut f = Fragment::default();
    let mut mline: Option<u16> = None;
    let mut mid: Option<String> = None;
    for (n, line) in body.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=') else {
            return err(format!("line {}: not `x=value`", n + 1));
        };
        match kind {
            "m" => {
                mline = Some(match mline {
                    None => 0,
                    Some(i) if i < 64 => i + 1,
                    Some(_) => return err("too many media sections".into()),
                });
                mid = None;
            }
            "a" => {
                let (name, val) = value.split_once(':').unwrap_or((value, ""));
                match name {
                    "ice-ufrag" => {
                        if !ice_char_ok(val) {
                            return err(format!("line {}: bad ice-ufrag", n + 1));
                        }
                        f.ufrag = Some(val.to_owned());
                    }
                    "ice-pwd" => {
                        if !ice_char_ok(val) {
                            return err(format!("line {}: bad ice-pwd", n + 1));
                        }
                        f.pwd = Some(val.to_owned());
                    }
                    "mid" => {
                        if val.is_empty() || val.len() > 32 || val.chars().any(char::is_control) {
                            return err(format!("line {}: bad mid", n + 1));
                        }
                        mid = Some(val.to_owned());
                    }
                    "candidate" => {
                        if !candidate_ok(value) {
                            return err(format!("line {}: malformed candidate", n + 1));
                        }
                        if f.candidates.len() == MAX_CANDIDATES {
                            return err(format!("more than {MAX_CANDIDATES} candidates"));
                        }
                        f.candidates.push(Candidate {
                            candidate: value.to_owned(),
                            mid: mid.clone(),
                            mline_index: mline,
                        });
                    }
                    "end-of-candidates" => f.end_of_candidates = true,
                    _ => {} // ice-options, group, ...: nothing to do
                }
            }
            // RFC 8840 fragments carry no other line types; `v=`/`o=`/`s=`/`t=` are tolerated
            // from clients that send a whole SDP.
            "v" | "o" | "s" | "t" | "c" => {}
            _ => return err(format!("line {}: unexpected `{kind}=` line", n + 1)),
        }
    }
    if f.ufrag.is_some() != f.pwd.is_some() {
        return err("ice-ufrag and ice-pwd come together".into());
    }
    Ok(f)
}

/// The server's `a=ice-ufrag` in an SDP (its answer), if any.
pub fn sdp_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("a=ice-ufrag:"))
}

/// The entity tag of a session whose answer has ICE username fragment `ufrag`: it changes
/// when ICE restarts, so `If-Match` tells a client's stale PATCH from a current one.
pub fn etag(ufrag: &str) -> String {
    format!("\"{ufrag}\"")
}

/// Does an `If-Match` header value match the session's tag (`*` matches any session)?
pub fn if_match(header: &str, tag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == tag || t.strip_prefix("W/") == Some(tag))
}

/// The client's offer of a session again, with the new ICE credentials of a restart
/// (RFC 9725 §4.4): every `a=ice-ufrag`/`a=ice-pwd` replaced, and its candidates dropped
/// (they belonged to the old credentials; the restart's come in the fragment). The peer
/// connection restarts ICE when this is applied as a new remote offer.
pub fn with_ice_credentials(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// The body of a `200` answering an ICE restart (RFC 9725 §4.4, an RFC 8840 fragment): the
/// server's new `a=ice-ufrag`/`a=ice-pwd` from its new answer, then its first media section's
/// `m=` line, `a=mid` and component-1 candidates (one bundled, RTCP-muxed transport), and
/// `a=end-of-candidates`.
pub fn restart_fragment(answer: &str) -> Option<String> {
    let mut ufrag = None;
    let mut pwd = None;
    let mut mline = None;
    let mut mid = None;
    let mut cands = Vec::new();
    let mut section = 0usize;
    for line in answer.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            section += 1;
            if section == 1 {
                mline = Some(line);
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            ufrag.get_or_insert(v);
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            pwd.get_or_insert(v);
        } else if section == 1 {
            if let Some(v) = line.strip_prefix("a=mid:") {
                mid.get_or_insert(v);
            } else if line.starts_with("a=candidate:")
                && line.split_ascii_whitespace().nth(1) == Some("1")
            {
                // RTP's component only: WebRTC muxes RTCP (RFC 8858), so component-2
                // candidates are dead weight (and some clients join them badly).
                cands.push(line);
            }
        }
    }
    let mut f = format!("a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n", ufrag?, pwd?);
    if let Some(m) = mline {
        f.push_str(m);
        f.push_str("\r\n");
        if let Some(mid) = mid {
            f.push_str(&format!("a=mid:{mid}\r\n"));
        }
        for c in cands {
            f.push_str(c);
            f.push_str("\r\n");
        }
        f.push_str("a=end-of-candidates\r\n");
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAG: &str = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\na=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\na=end-of-candidates\r\n";

    #[test]
    fn a_browser_fragment_parses() {
        let f = parse(FRAG).unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.candidates.len(), 2);
        assert_eq!(f.candidates[0].mid.as_deref(), Some("0"));
        assert_eq!(f.candidates[0].mline_index, Some(0));
        assert!(f.candidates[1]
            .candidate
            .starts_with("candidate:3471623853 1 udp"));
        assert!(f.end_of_candidates);
        assert!(!f.is_restart("EsAw"));
        assert!(f.is_restart("old1"));
    }

    #[test]
    fn candidates_alone_and_end_alone() {
        let f = parse("a=candidate:1 1 UDP 1 127.0.0.1 5000 typ host\n").unwrap();
        assert_eq!(f.candidates[0].mline_index, None);
        assert!(!f.is_restart("x"));
        let e = parse("a=end-of-candidates\r\n").unwrap();
        assert!(e.end_of_candidates && e.candidates.is_empty());
    }

    #[test]
    fn malformed_fragments_are_refused_whole() {
        for bad in [
            "a=candidate:1 1 udp 1 127.0.0.1 5000 typ\r\n",
            "a=candidate:1 1 sctp 1 127.0.0.1 5000 typ host\r\n",
            "a=candidate:1 1 udp 1 127.0.0.1 99999 typ host\r\n",
            "a=candidate:1 1 udp 1 127.0.0.1 5000 typ martian\r\n",
            "a=ice-ufrag:only-ufrag\r\n",
            "a=ice-ufrag:bad ufrag\r\na=ice-pwd:x\r\n",
            "hello\r\n",
            "x=1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let many: String = (0..65)
            .map(|i| format!("a=candidate:{i} 1 udp 1 127.0.0.1 5000 typ host\r\n"))
            .collect();
        assert!(parse(&many).is_err());
    }

    #[test]
    fn tags_and_if_match() {
        let answer = "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:x\r\n";
        let tag = etag(sdp_ufrag(answer).unwrap());
        assert_eq!(tag, "\"abcd\"");
        assert!(if_match("\"abcd\"", &tag));
        assert!(if_match("*", &tag));
        assert!(if_match("\"zz\", \"abcd\"", &tag));
        assert!(!if_match("\"zz\"", &tag));
    }

    #[test]
    fn an_ice_restart_rewrites_the_offer_and_answers_a_fragment() {
        let offer = "v=0\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword12\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword12\r\na=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\na=end-of-candidates\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:1\r\n";
        let re = with_ice_credentials(offer, "newU", "newpasswordnewpassword12");
        assert!(!re.contains("old"), "{re}");
        assert_eq!(re.matches("a=ice-ufrag:newU\r\n").count(), 2);
        assert_eq!(
            re.matches("a=ice-pwd:newpasswordnewpassword12\r\n").count(),
            2
        );
        assert!(!re.contains("a=candidate") && !re.contains("end-of-candidates"));
        assert!(re.contains("m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:1\r\n"));

        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:srv2\r\na=ice-pwd:serverpasswordserverpw12\r\na=mid:0\r\na=candidate:9 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=candidate:9 2 udp 2130706431 127.0.0.1 40000 typ host\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:1\r\na=candidate:9 1 udp 2130706431 127.0.0.1 40000 typ host\r\n";
        let f = restart_fragment(answer).unwrap();
        assert_eq!(
            f,
            "a=ice-ufrag:srv2\r\na=ice-pwd:serverpasswordserverpw12\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:9 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n"
        );
        // What the server answers parses as a fragment, as a client will parse it.
        let back = parse(&f).unwrap();
        assert_eq!(back.ufrag.as_deref(), Some("srv2"));
        assert_eq!(back.candidates.len(), 1);
        assert!(restart_fragment("v=0\r\n").is_none());
    }
}

"""A WHIP publisher and a WHEP player on aiortc (a WebRTC stack nobody here wrote), in trickle
mode: the offer goes out without candidates and they follow in PATCH requests
(`application/trickle-ice-sdpfrag`, RFC 8840 / RFC 9725 section 4.3), the way trickling
clients in the field do. Used by `tests/aiortc_interop.rs`; pinned by `requirements.txt`.

    python whip.py publish URL TOKEN SECONDS   # H.264 + Opus, frame counter drawn in luma
    python whip.py play URL TOKEN FRAMES       # exits 0 once FRAMES video pictures decoded

Prints one JSON line of results at the end; exits 1 on any failure. Only 127.0.0.1 is used
(aioice skips loopback by default; the tests stay on loopback).
"""

import asyncio
import json
import math
import sys
import time
import urllib.parse

import aioice.ice
import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

FRAG = "application/trickle-ice-sdpfrag"
W, H = 320, 240


def log(*a):
    print("[aiortc]", *a, file=sys.stderr, flush=True)


class CounterTrack(VideoStreamTrack):
    """30 fps pictures carrying their number as 16 black/white blocks across the middle band
    (the tests' `draw_counter`: rows h*100/240..h*140/240, most significant bit first)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        y = bytearray([96]) * (W * H)
        bw = W // 16
        for i in range(16):
            v = 235 if (self.n >> (15 - i)) & 1 else 16
            block = bytes([v]) * bw
            for row in range(H * 100 // 240, H * 140 // 240):
                y[row * W + i * bw : row * W + (i + 1) * bw] = block
        frame = av.VideoFrame(W, H, "yuv420p")
        frame.planes[0].update(bytes(y))
        frame.planes[1].update(bytes([128]) * (W * H // 4))
        frame.planes[2].update(bytes([128]) * (W * H // 4))
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        return frame


class ToneTrack(AudioStreamTrack):
    """A 440 Hz tone (aiortc's own track sends silence, which proves little)."""

    def __init__(self):
        super().__init__()
        self.t = 0

    async def recv(self):
        frame = await super().recv()
        n = frame.samples
        pcm = bytearray()
        for i in range(n):
            v = int(8000 * math.sin(2 * math.pi * 440 * (self.t + i) / 48000))
            pcm += v.to_bytes(2, "little", signed=True)
        self.t += n
        frame.planes[0].update(bytes(pcm))
        return frame


def split_candidates(sdp):
    """The offer without its candidate lines, and a trickle fragment carrying them."""
    lines = sdp.replace("\r\n", "\n").split("\n")
    kept, cands = [], []
    ufrag = pwd = mid = None
    for line in lines:
        if line.startswith("a=candidate:") or line == "a=end-of-candidates":
            if line.startswith("a=candidate:") and mid == "0":
                cands.append(line)
            continue
        if line.startswith("a=ice-ufrag:") and ufrag is None:
            ufrag = line
        if line.startswith("a=ice-pwd:") and pwd is None:
            pwd = line
        if line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        kept.append(line)
    offer = "\r\n".join(kept)
    frag = [ufrag, pwd, "m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0", *cands, "a=end-of-candidates"]
    return offer, "\r\n".join(frag) + "\r\n", len(cands)


async def http(method, url, token, ctype=None, body=None, extra=None):
    """A minimal HTTP/1.1 client on asyncio streams (the test box has no `requests`)."""
    u = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
    path = u.path + (f"?{u.query}" if u.query else "")
    data = (body or "").encode()
    head = [f"{method} {path} HTTP/1.1", f"Host: {u.netloc}", f"Authorization: Bearer {token}",
            f"Content-Length: {len(data)}", "Connection: close"]
    if ctype:
        head.append(f"Content-Type: {ctype}")
    for k, v in (extra or {}).items():
        head.append(f"{k}: {v}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest.decode(errors="replace")


async def negotiate(pc, url, token):
    """POST the offer without candidates, then trickle them with PATCH. Returns timings."""
    t0 = time.monotonic()
    await pc.setLocalDescription(await pc.createOffer())
    offer, frag, n = split_candidates(pc.localDescription.sdp)
    status, headers, answer = await http("POST", url, token, "application/sdp", offer)
    if status != 201:
        raise RuntimeError(f"POST {url}: {status} {answer}")
    location = urllib.parse.urljoin(url, headers["location"])
    etag = headers.get("etag")
    if headers.get("accept-patch") != FRAG:
        raise RuntimeError(f"201 without Accept-Patch: {headers}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    extra = {"If-Match": etag} if etag else {}
    status, _, body = await http("PATCH", location, token, FRAG, frag, extra)
    if status != 204:
        raise RuntimeError(f"PATCH {location}: {status} {body}")
    log(f"POST 201, PATCH of {n} candidates 204")
    return location, t0


async def wait_connected(pc, t0, timeout=20):
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() - t0 > timeout:
            raise RuntimeError(f"connection {pc.connectionState}")
        await asyncio.sleep(0.01)
    return (time.monotonic() - t0) * 1000


async def publish(url, token, seconds):
    pc = RTCPeerConnection()
    video = CounterTrack()
    pc.addTransceiver(video, direction="sendonly")
    pc.addTransceiver(ToneTrack(), direction="sendonly")
    # H.264 only: cohost forwards untouched and mixes H.264.
    for t in pc.getTransceivers():
        if t.kind == "video":
            from aiortc.rtcrtpsender import RTCRtpSender

            caps = RTCRtpSender.getCapabilities("video").codecs
            t.setCodecPreferences([c for c in caps if c.mimeType in ("video/H264", "video/rtx")])
    location, t0 = await negotiate(pc, url, token)
    ms = await wait_connected(pc, t0)
    log(f"publishing, connected {ms:.0f} ms after POST")
    await asyncio.sleep(seconds)
    status, _, _ = await http("DELETE", location, token)
    await pc.close()
    print(json.dumps({"connected_ms": round(ms), "frames_sent": video.n, "delete": status}))


async def play(url, token, want):
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    got = {"video": 0, "audio": 0, "size": None}
    done = asyncio.Event()

    async def consume(track):
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    got["video"] += 1
                    got["size"] = [frame.width, frame.height]
                    if got["video"] >= want:
                        done.set()
                else:
                    got["audio"] += 1
        except MediaStreamError:
            pass

    pc.on("track", lambda track: asyncio.ensure_future(consume(track)))
    location, t0 = await negotiate(pc, url, token)
    ms = await wait_connected(pc, t0)
    log(f"playing, connected {ms:.0f} ms after POST")
    await asyncio.wait_for(done.wait(), 30)
    status, _, _ = await http("DELETE", location, token)
    await pc.close()
    print(json.dumps({"connected_ms": round(ms), "video_frames": got["video"],
                      "audio_frames": got["audio"], "size": got["size"], "delete": status}))


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("publish", "play"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmd, url, token, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    try:
        asyncio.run(publish(url, token, n) if cmd == "publish" else play(url, token, n))
    except Exception as e:  # noqa: BLE001 - report any failure as the exit code
        log(f"FAILED: {e!r}")
        sys.exit(1)


if __name__ == "__main__":
    main()

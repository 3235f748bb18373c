#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/seed-*.

Seeds follow each target's input layout (see the doc comment at the top of each target).
Rerunning overwrites the seed-* files only; inputs libFuzzer added and regression-* files stay.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(fin, op, payload, key=KEY, masked=True):
    b0 = (0x80 if fin else 0) | op
    n = len(payload)
    m = 0x80 if masked else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


# Valid and invalid client streams, mostly from the codec tests.
STREAMS = {
    "rfc-hello": frame(True, 1, b"Hello"),
    "fragmented-with-ping": frame(False, 1, b"Hel") + frame(True, 9, b"p")
    + frame(True, 0, b"lo"),
    "binary-256": frame(True, 2, bytes(range(256))),
    "controls": frame(True, 9, b"ping") + frame(True, 10, b"") + frame(True, 8, b"\x03\xe8bye"),
    "emoji-3-fragments": frame(False, 1, b"a\xf0\x9f") + frame(False, 0, b"\x98")
    + frame(True, 0, b"\x80b"),
    "unmasked": frame(True, 1, b"hi", masked=False),
    "rsv1": bytes([0xC1]) + frame(True, 1, b"hi")[1:],
    "non-minimal-16": bytes([0x82, 0xFE, 0x00, 0x05]) + KEY + b"\0" * 5,
    "close-1014": frame(True, 8, b"\x03\xf6gw"),
    "close-1005": frame(True, 8, b"\x03\xed"),
    "bad-utf8-fragment": frame(False, 1, b"ok ") + frame(True, 0, b"\xed\xa0\x80"),
    "continuation-first": frame(True, 0, b"x"),
}


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    assert len(data) < 4096, (target, name, len(data))
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def main():
    # frame_decoder_split: [limit index, cut count, cuts..., stream]
    for name, s in STREAMS.items():
        write("frame_decoder_split", name, bytes([7, 0]) + s)
    write("frame_decoder_split", "cuts", bytes([5, 3, 1, 2, 7]) + STREAMS["fragmented-with-ping"])
    write("frame_decoder_split", "limit-16", bytes([2, 0]) + frame(False, 2, b"x" * 10)
          + frame(True, 0, b"y" * 7))

    # differential_tungstenite: [limit index, stream]
    for name, s in STREAMS.items():
        write("differential_tungstenite", name, bytes([7]) + s)
    write("differential_tungstenite", "limit-16-too-big", bytes([2]) + frame(False, 2, b"x" * 10)
          + frame(True, 0, b"y" * 7))
    many = frame(False, 2, b"") + b"".join(frame(False, 0, b"") for _ in range(64)) \
        + frame(True, 0, b"z")
    write("differential_tungstenite", "fragment-cap", bytes([5]) + many)

    # frame_roundtrip: structured (arbitrary); any bytes decode to some Input.
    write("frame_roundtrip", "zeros", bytes(64))
    write("frame_roundtrip", "text", b"\x01\x00\x05Hello\x02\x03\x01\x00\x02\x00\x00\x00\x00"
          + bytes(range(64)))
    write("frame_roundtrip", "mixed", bytes(range(256)))

    # utf8_validator: [chunk count, chunk lengths..., bytes]
    write("utf8_validator", "valid", bytes([3, 1, 2, 3]) + "aé€😀z".encode())
    write("utf8_validator", "surrogate", bytes([2, 3, 1]) + b"ok \xed\xa0\x80")
    write("utf8_validator", "truncated", bytes([1, 2]) + b"a\xf0\x9f\x98")
    write("utf8_validator", "overlong", bytes([0]) + b"\xe0\x80\x80")

    # handshake: a request head
    write("handshake", "rfc", b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\n"
          b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          b"Origin: https://ok.example\r\nSec-WebSocket-Version: 13\r\n\r\n")
    write("handshake", "keepalive", b"GET /ws?user_id=u1 HTTP/1.1\r\nhost: a\r\n"
          b"upgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n"
          b"sec-websocket-key:  AQIDBAUGBwgJCgsMDQ4PEA== \r\nsec-websocket-version: 13\r\n\r\n")
    write("handshake", "http10", b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")

    # client_json: [max_subscriptions, json]
    game = {"game_id": "7", "home_team": "KC", "away_team": "BUF", "home_score": 21,
            "away_score": 17, "quarter": 4, "time_remaining": "02:05",
            "game_status": "in_progress", "updated_at": "2026-11-25T18:04:05Z"}
    odds = {"game_id": "7", "sportsbook": "fanduel", "home_team": "KC", "away_team": "BUF",
            "spread": -3.5, "moneyline_home": -150, "moneyline_away": 130, "over_under": 47.5,
            "updated_at": "2026-11-25T18:04:05.123Z"}
    prediction = {"game_id": "7", "home_team": "KC", "away_team": "BUF",
                  "home_win_probability": 0.62, "away_win_probability": 0.38,
                  "predicted_spread": -3, "confidence_level": 0.8, "model_version": "v2.1",
                  "updated_at": "2026-11-25T18:04:05+01:00"}
    notification = {"message": "Kickoff soon", "level": "info", "title": "Heads up",
                    "action_required": False}
    docs = {
        "heartbeat": {"event_type": "heartbeat", "message_id": "h1"},
        "subscribe": {"event_type": "user_subscription", "message_id": "c1",
                      "data": {"channels": ["odds", {"channel": "games",
                                                     "filter": {"game_id": [7, "7", 7.0]}}],
                               "filter": {"sportsbook": "fanduel"}}},
        "unsubscribe": {"event_type": "user_unsubscription", "message_id": "u1",
                        "data": {"channel": "odds"}},
        "ws-publish": {"event_type": "publish", "message_id": "p",
                       "data": {"event_type": "prediction_update", "data": prediction}},
        "publish-odds": {"channels": ["odds", "odds_7"], "event_type": "odds_update",
                         "data": odds, "message_id": "m"},
        "publish-game": {"event_type": "game_update", "data": game},
        "send": {"user_id": "u1", "event_type": "notification", "data": notification,
                 "channel": "bankroll"},
        "unknown": {"event_type": "Refresh", "message_id": "r1"},
        "refresh": {"event_type": "refresh", "message_id": "r2",
                    "data": {"token": "eyJhbGciOiJIUzI1NiJ9.e30.sig"}},
        "refresh-no-token": {"event_type": "refresh", "message_id": "r3", "data": {}},
    }
    for name, doc in docs.items():
        write("client_json", name, bytes([8]) + json.dumps(doc).encode())
    write("client_json", "malformed", bytes([8]) + b'{"event_type":"heartbeat",')
    write("client_json", "filter", bytes([1]) + b'{"game_id":["7",7],"live":true,"n":1.5}')

    # timer_wheel / registry: structured (arbitrary); a few byte patterns.
    for target in ("timer_wheel", "registry"):
        write(target, "zeros", bytes(64))
        write(target, "ramp", bytes(range(256)))
        write(target, "pattern", bytes([1, 7, 0, 3, 2, 9, 4, 1, 0, 200]) * 20)

    # channel_engine: structured (arbitrary), encoded by ce_input so the seeds reach eviction,
    # re-arming after an append, pinning by interest and reuse at a new epoch.
    write("channel_engine", "zeros", bytes(64))
    write("channel_engine", "ramp", bytes(range(256)))
    a, b = 0, 1
    write("channel_engine", "evict-and-reuse", ce_input(0, [
        ("append", a), ("append", a), ("append", b), ("timeout",),
        ("advance", ("ticks", 1, 0), True), ("advance", ("ticks", 1, 0), True),
        ("append", a), ("interest", b, 3, False), ("advance", ("far", 3), True)]))
    write("channel_engine", "rearm-after-append", ce_input(3, [
        ("append", a), ("advance", ("ticks", 7, 0), True), ("append", a),
        ("advance", ("ticks", 2, 0), True), ("advance", ("ticks", 7, 0), True),
        ("advance", ("ticks", 3, 32768), True), ("advance", ("nanos", 999), True)]))
    write("channel_engine", "pinned", ce_input(1, [
        ("interest", a, 5, True), ("interest", a, 0, True), ("append", a),
        ("advance", ("far", 200), True), ("interest", a, 5, False), ("interest", a, 7, False),
        ("advance", ("far", 200), True), ("interest", a, 0, False), ("append", a),
        ("advance", ("ticks", 1, 100), True), ("advance", ("far", 1), True), ("append", a)]))
    write("channel_engine", "off-unknown", ce_input(2, [
        ("interest", b, 1, False), ("interest", b, 1, True), ("interest", b, 1, False),
        ("advance", ("zero",), True), ("advance", ("far", 9), False), ("timeout",)]))
    write("channel_engine", "default-ttl-wrap", ce_input(4, [
        ("append", a), ("append", b), ("advance", ("far", 255), True), ("append", b),
        ("advance", ("far", 60), True), ("advance", ("far", 255), True),
        ("advance", ("far", 255), True), ("append", a), ("advance", ("far", 255), True)]))

    # conn_state: arbitrary-encoded `Input { echo, interval, timeout, ops }`; a run of bytes
    # decodes to some ops (zeros: no ops; the ramp and repeats: steps, frames, timeouts, closes).
    # glob: arbitrary-encoded `Input { pattern, text, long }`.
    write("glob", "zeros", bytes(16))
    write("glob", "ramp", bytes(range(64)))
    write("glob", "stars", bytes([8, 2, 0, 2, 1, 2, 0, 2, 1]) + bytes([6, 0, 0, 1, 0, 1, 0]) + bytes([1, 255, 255]))
    write("conn_state", "zeros", bytes(64))
    write("conn_state", "ramp", bytes(range(256)))
    write("conn_state", "short-settings", bytes([0, 3, 9]) + bytes([1, 0, 0, 0, 0x40, 5]) * 40)
    # history: arbitrary-encoded `Vec<Op>`; runs of bytes decode to pushes, steps and queries.
    write("history", "zeros", bytes(64))
    write("history", "ramp", bytes(range(256)))
    write("history", "pushes", bytes([0, 0, 0, 0, 10, 8]) * 30 + bytes([0x80, 0, 3, 0, 9, 0, 20]) * 10)
    # conn_state: a token deadline that fires at poll_timeout, one set in the past, a refresh
    # that moves it, a clear, then heartbeat expiry.
    write("conn_state", "token-expiry", cs_input(3, 9, [
        ("expiry", ("at", 30)), ("deadline",), ("deadline",), ("expiry", ("at", -5)),
        ("timeout",), ("expiry", ("at", 200)), ("activity",), ("deadline",),
        ("expiry", ("clear",)), ("step", 100), ("timeout",), ("expiry", ("far",)), ("close", 0),
        ("deadline",)]))

    # token: arbitrary-encoded `Input { leeway, audience, issuer, now, token }` (tok_input), one
    # per rule of the model, and the four known disagreements K1-K4 as signed examples.
    for name, kw in TOKEN_SEEDS.items():
        write("token", name, tok_input(**kw))
    write("token", "zeros", bytes(64))
    write("token", "ramp", bytes(range(256)))

    # mirror: structured (arbitrary), encoded by mi_input. Offer offsets are `released - 3 +
    # delta % 12` (just `delta` while released < 3), Near positions `released - 4 + n % 16`.
    write("mirror", "zeros", bytes(64))
    write("mirror", "ramp", bytes(range(256)))
    # Held out of order before start (another epoch among them), start at 3: 4 and 5 go out, a
    # gap (5, 7) until 6 comes, then 4..=7 are recent.
    write("mirror", "out-of-order", mi_input(4, [
        ("offer", 5, 0), ("offer", 4, 0), ("offer", 7, 0), ("offer", 6, 1), ("offer", 2, 0),
        ("start", ("near", 3), 0), ("offer", 4, 0), ("step", 100), ("offer", 4, 0),
        ("offer", 1, 0), ("since", 4, 0, 1000, 30), ("since", 5, 0, 1000, 30),
        ("after", 2, 1000), ("since", 0, 1, 1000, 30)]))
    # Live at A, another epoch is reported, reset at B: the recent frames are gone.
    write("mirror", "epoch-change-reset", mi_input(8, [
        ("start", ("near", 4), 0), ("offer", 1, 0), ("offer", 2, 0), ("offer", 3, 1),
        ("offer", 4, 0), ("since", 2, 0, 500, 10), ("reset", ("near", 6), 1),
        ("since", 2, 0, 500, 10), ("offer", 4, 0), ("offer", 4, 1), ("offer", 5, 1),
        ("after", 5, 500), ("start", ("near", 2), 1), ("offer", 5, 1)]))
    # Positions at the top of u64: releases up to u64::MAX, then nothing can follow.
    write("mirror", "far", mi_input(3, [
        ("start", ("far", 3), 2), ("offer", 4, 2), ("offer", 6, 2), ("offer", 5, 2),
        ("offer", 4, 2), ("since", 2, 0, 900, 5), ("offer", 11, 2), ("reset", ("far", 0), 0),
        ("offer", 11, 0), ("since", 0, 1, 900, 5), ("start", ("far", 1), 0), ("offer", 4, 0)]))
    # Releases spread over time: ttl hides the old ones from since (all or nothing) and after.
    write("mirror", "ttl", mi_input(10, [
        ("start", ("near", 4), 0), ("offer", 1, 0), ("step", 300), ("offer", 4, 0),
        ("step", 300), ("offer", 4, 0), ("step", 300), ("offer", 4, 0),
        ("since", 1, 0, 700, 20), ("since", 2, 0, 700, 20), ("since", 3, 0, 700, 20),
        ("after", 4, 700), ("step", 999), ("since", 1, 0, 700, 20)]))



def ce_input(ttl, ops):
    """Bytes that `arbitrary` decodes to channel_engine's `Input { ttl, ops }`."""
    def variant(i):  # derive(Arbitrary) picks variant (u32 * 4) >> 32 of an enum of 4
        return struct.pack("<I", i << 30)
    out = bytes([ttl])
    for op in ops:
        out += b"\x01"  # one more element in the Vec
        kind = op[0]
        if kind == "append":
            out += variant(0) + bytes([op[1]])
        elif kind == "interest":
            out += variant(1) + bytes([op[1], op[2], int(op[3])])
        elif kind == "advance":
            step, timeout = op[1], op[2]
            if step[0] == "zero":
                out += variant(2) + variant(0)
            elif step[0] == "nanos":
                out += variant(2) + variant(1) + struct.pack("<H", step[1])
            elif step[0] == "ticks":
                out += variant(2) + variant(2) + bytes([step[1]]) + struct.pack("<H", step[2])
            else:
                out += variant(2) + variant(3) + bytes([step[1]])
            out += bytes([int(timeout)])
        else:
            out += variant(3)
    return out + b"\x00"


def mi_input(size, ops):
    """Bytes that `arbitrary` decodes to mirror's `Input { size, ops }`."""
    def at(a):
        return variant(["near", "far"].index(a[0]), 2) + bytes([a[1]])
    enc = []
    for op in ops:
        kind = op[0]
        if kind == "offer":
            enc.append(variant(0, 6) + bytes([op[1], op[2]]))
        elif kind == "start":
            enc.append(variant(1, 6) + at(op[1]) + bytes([op[2]]))
        elif kind == "reset":
            enc.append(variant(2, 6) + at(op[1]) + bytes([op[2]]))
        elif kind == "step":
            enc.append(variant(3, 6) + struct.pack("<H", op[1]))
        elif kind == "since":  # back, ahead, ttl_ms, max
            enc.append(variant(4, 6) + bytes([op[1], op[2]]) + struct.pack("<HB", op[3], op[4]))
        else:  # after: back, ttl_ms
            enc.append(variant(5, 6) + bytes([op[1]]) + struct.pack("<H", op[2]))
    return bytes([size]) + flagged(enc)


def variant(i, n):
    """The u32 that `derive(Arbitrary)` reads as variant i of an enum of n: (u32 * n) >> 32."""
    return struct.pack("<I", -(-(i << 32) // n))


def flagged(items):
    """A Vec (or a last-field Vec): each element after a 1 byte, then a 0."""
    return b"".join(b"\x01" + it for it in items) + b"\x00"


def option(x):
    return b"\x00" if x is None else b"\x01" + x


def cs_input(interval, timeout, ops, echo=False):
    """Bytes that `arbitrary` decodes to conn_state's `Input { echo, interval, timeout, ops }`."""
    enc = []
    for op in ops:
        kind = op[0]
        if kind == "step":
            enc.append(variant(0, 7) + struct.pack("<H", op[1]))
        elif kind == "activity":
            enc.append(variant(1, 7))
        elif kind == "timeout":
            enc.append(variant(3, 7))
        elif kind == "deadline":
            enc.append(variant(4, 7))
        elif kind == "close":
            enc.append(variant(5, 7) + bytes([op[1]]))
        else:
            e = op[1]
            if e[0] == "clear":
                enc.append(variant(6, 7) + variant(0, 3))
            elif e[0] == "at":
                enc.append(variant(6, 7) + variant(1, 3) + struct.pack("<h", e[1]))
            else:
                enc.append(variant(6, 7) + variant(2, 3))
    return bytes([int(echo), interval, timeout]) + flagged(enc)


# token's enums, in declaration order (see fuzz_targets/token.rs).
ALG = ["hs", "none", "asym", "unknown", "number", "null", "missing"]
NUM = ["near", "edge", "far", "abs", "str", "null", "bool", "array"]
FORM = ["int", "half", "dotzero", "expzero", "expupper"]
SUB = ["missing", "null", "name", "escaped", "bytes", "number", "array"]
AUD = ["name", "list", "number", "null", "mixed"]
ITEM = ["glob", "run", "wide", "empty", "number", "null", "nested"]
SIGN = ["correct", "otherhs", "secret", "truncate", "extend", "padded", "empty", "garbage",
        "mutate"]
DUP = ["sub", "exp", "nbf", "aud", "iss", "channels", "custom"]
PARAM = ["str", "number", "null", "object", "crit", "critnotarray"]


def t_alg(a):
    kind, *arg = a
    return variant(ALG.index(kind), 7) + bytes(arg)


def t_num(n):
    if n is None:
        return b"\x00"
    kind, *arg = n
    out = b"\x01" + variant(NUM.index(kind), len(NUM))
    if kind == "edge":
        out += bytes([int(arg[0]), arg[1]])
    elif kind == "near":
        out += struct.pack("<b", arg[0]) + variant(FORM.index(arg[1]), 5)
    elif kind == "far":
        out += struct.pack("<i", arg[0]) + variant(FORM.index(arg[1]), 5)
    elif kind == "abs":
        out += bytes([arg[0]])
    return out


def t_aud(a):
    if a is None:
        return b"\x00"
    kind, *arg = a
    out = b"\x01" + variant(AUD.index(kind), 5)
    if kind == "name":
        out += bytes([arg[0]])
    elif kind == "list":
        out += flagged([bytes([i]) for i in arg[0]])
    return out


def bnd(v, limit=256):
    """The u16 that token's `boundary(n, limit)` maps to v."""
    if limit - 1 <= v <= limit + 1:
        return 4 * (v - limit + 1)
    return 4 * v + 2 if v < 4 else 4 * v + 1


def t_item(it):
    kind, *arg = it
    out = variant(ITEM.index(kind), 7)
    if kind == "run":
        out += struct.pack("<H", bnd(arg[0]))
    elif kind in ("glob", "wide"):
        out += bytes([arg[0]])
    return out


def t_pats(p):
    if p is None:
        return b"\x00"
    kind, *arg = p
    if kind == "null":
        return b"\x01" + variant(0, 3)
    if kind == "notarray":
        return b"\x01" + variant(1, 3) + bytes([arg[0]])
    count, item = arg
    return b"\x01" + variant(2, 3) + struct.pack("<H", bnd(count)) + t_item(item) + b"\x00"


def tok_input(leeway=0, audience=0, issuer=0, now=0, raw=None, alg=("hs", 0), typ=0,
              kid=None, param=None, dup_alg=None, array=False, sub=("name", 0),
              exp=("near", 60, "int"), nbf=None, aud=None, iss=None, channels=None,
              publish=None, dup=None, sign=("correct",), size=None):
    """Bytes that `arbitrary` decodes to token's `Input` (`now`: seconds after BASE)."""
    out = bytes([leeway, audience, issuer]) + variant(0, 4) + struct.pack("<iI", now, 0)
    if raw is not None:
        return out + variant(1, 2) + flagged([bytes([b]) for b in raw])
    out += variant(0, 2)
    # HeaderSpec
    out += t_alg(alg) + b"\x00"
    out += option(None if typ is None else variant(typ, 3))
    out += option(None if kid is None else variant(kid, 2))
    out += option(None if param is None else variant(PARAM.index(param), 6))
    out += option(None if dup_alg is None else t_alg(dup_alg))
    out += b"\x00\x00" + bytes([int(array)]) + variant(0, 3)
    # ClaimsSpec
    kind, *arg = sub
    out += variant(SUB.index(kind), 7)
    out += flagged([bytes([b]) for b in arg[0]]) if kind == "bytes" else bytes(arg)
    out += t_num(exp) + t_num(nbf) + t_aud(aud) + t_aud(iss) + t_pats(channels) + t_pats(publish)
    out += b"\x00" + option(None if dup is None else variant(DUP.index(dup), 7))
    out += b"\x00" + variant(0, 3) + b"\x00" + variant(0, 3)
    # Sign, size
    kind, *arg = sign
    out += variant(SIGN.index(kind), 9)
    if kind == "mutate":
        out += struct.pack("<HB", arg[0], arg[1])
    elif arg:
        out += bytes(arg)
    return out + option(None if size is None else struct.pack("<b", size))


def hs256_token(header, claims, secret=b"huddle-fuzz-secret"):
    import base64
    import hashlib
    import hmac
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    msg = b64(json.dumps(header, separators=(",", ":")).encode()) + b"." \
        + b64(json.dumps(claims, separators=(",", ":")).encode())
    return msg + b"." + b64(hmac.new(secret, msg, hashlib.sha256).digest())


# BASE (2026-12-01T00:00:00Z) in the target.
BASE = 1_796_083_200
TOKEN_SEEDS = {
    "valid-hs256": {},
    "valid-all-claims": dict(leeway=3, audience=1, issuer=1, alg=("hs", 2), kid=0,
                             nbf=("near", -5, "int"), aud=("list", [4, 0]), iss=("name", 0),
                             channels=("list", 3, ("glob", 0)), publish=("list", 1, ("glob", 2))),
    "exp-fraction": dict(exp=("near", 0, "half"), leeway=4),
    "exp-far-limit": dict(exp=("abs", 6)),
    "expired-at-exp": dict(exp=("near", 0, "int")),
    "nbf-future": dict(nbf=("near", 5, "int")),
    "nbf-at-leeway-edge": dict(leeway=2, nbf=("edge", False, 1)),
    "exp-at-leeway-edge": dict(leeway=3, exp=("edge", True, 2)),
    "alg-none": dict(alg=("none", 1)),
    "rs256": dict(alg=("asym", 0)),
    "wrong-secret": dict(sign=("secret", 0)),
    "other-hs": dict(alg=("hs", 1), sign=("otherhs", 0)),
    "at-limit": dict(size=2),
    "one-over-limit": dict(size=3),
    "channels-257": dict(channels=("list", 257, ("glob", 1))),
    "pattern-257-bytes": dict(publish=("list", 1, ("run", 257))),
    "pattern-256-bytes": dict(publish=("list", 2, ("run", 256))),
    "sub-empty": dict(sub=("bytes", b"")),
    "dup-sub": dict(dup="sub"),
    "dup-alg": dict(alg=("none", 0), dup_alg=("hs", 0)),
    "mutated": dict(sign=("mutate", 40, 62)),
    "header-array": dict(array=True),
    "k1-kid-number": dict(kid=1),
    "k2-numeric-header-param": dict(param="number"),
    "k3-crit": dict(param="crit"),
    "k4-iss-array": dict(issuer=1, iss=("list", [2, 0])),
    "raw-valid": dict(raw=hs256_token({"alg": "HS256", "typ": "JWT"},
                                      {"sub": "u1", "exp": BASE + 60})),
    "raw-none": dict(raw=b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSIsImV4cCI6NDAwMDAwMDAwMH0."),
}


if __name__ == "__main__":
    main()

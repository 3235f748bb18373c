#!/usr/bin/env python3
"""Interop check: huddle against the Python `websockets` client (asyncio API).

Usage:
    python3 python_client.py BASE_URL API_KEY
    HUDDLE_URL=http://127.0.0.1:8080 HUDDLE_API_KEY=... python3 python_client.py

BASE_URL may be http://host:port or ws://host:port. The scenario follows
../../../shared/PROTOCOL.md §2-§7:

  1. connect to /ws/game/7; the first message is connection_ack with
     subscriptions game_7, odds_7, predictions_7
  2. subscribe to `odds` with a message_id; the reply has reply_to,
     status "subscribed", an integer offset and an epoch
  3. publish a valid odds_update to `odds` over HTTP; the client receives it
     on channel `odds` with offset = reply offset + 1
  4. error path: an unknown event_type gets an `error` with code
     unknown_event (and reply_to), and the connection stays usable
  5. heartbeat with message_id h1 gets a heartbeat reply with reply_to h1
     and server_time
  6. close with 1000; the close handshake completes and the server's close
     frame carries 1000

Every await has a timeout. Any mismatch exits 1 with a message naming the
step, what was expected and what was observed.
"""

import asyncio
import json
import os
import re
import sys
import urllib.error
import urllib.request

import websockets
from websockets.asyncio.client import connect
from websockets.protocol import State

TIMEOUT = 5.0
NAME = "python/websockets-" + websockets.__version__
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

ODDS = {
    "game_id": "7",
    "sportsbook": "fanduel",
    "home_team": "KC",
    "away_team": "BUF",
    "spread": -3.5,
    "moneyline_home": -150,
    "moneyline_away": 130,
    "over_under": 47.5,
    "updated_at": "2026-11-25T18:04:05Z",
}


class Mismatch(Exception):
    pass


def check(cond, step, expected, observed):
    if not cond:
        raise Mismatch(f"[{step}] expected {expected}; observed {observed!r}")


def check_no_nulls(step, msg):
    """PROTOCOL §3: fields that do not apply are omitted, not null."""
    nulls = [k for k, v in msg.items() if v is None]
    check(not nulls, step, "no top-level null fields (§3)", msg)


async def recv_json(ws, step):
    try:
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
    except asyncio.TimeoutError:
        raise Mismatch(f"[{step}] expected a message within {TIMEOUT}s; observed none") from None
    except websockets.ConnectionClosed as e:
        raise Mismatch(
            f"[{step}] expected a message; observed the connection closed "
            f"(rcvd={e.rcvd}, sent={e.sent})"
        ) from None
    check(isinstance(raw, str), step, "a text frame", raw)
    try:
        msg = json.loads(raw)
    except ValueError:
        raise Mismatch(f"[{step}] expected JSON; observed {raw!r}") from None
    check(isinstance(msg, dict), step, "a JSON object", msg)
    check_no_nulls(step, msg)
    return msg


async def send_json(ws, obj):
    await asyncio.wait_for(ws.send(json.dumps(obj)), TIMEOUT)


def http_publish(base, key, body):
    req = urllib.request.Request(
        base + "/api/publish",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    # No proxies from the environment for a loopback server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def scenario(base, ws_base, key):
    url = ws_base + "/ws/game/7"
    try:
        ws = await asyncio.wait_for(
            connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, proxy=None),
            TIMEOUT + 1,
        )
    except Exception as e:  # noqa: BLE001 - report any connect failure plainly
        raise Mismatch(f"[connect] expected a WebSocket upgrade at {url}; observed {e!r}") from None

    # 1. connection_ack
    step = "connection_ack"
    ack = await recv_json(ws, step)
    check(ack.get("event_type") == "connection_ack", step, "event_type connection_ack as the first message", ack)
    data = ack.get("data")
    check(isinstance(data, dict), step, "data object", ack)
    check(
        sorted(data.get("subscriptions") or []) == ["game_7", "odds_7", "predictions_7"],
        step,
        "subscriptions [game_7, odds_7, predictions_7]",
        data.get("subscriptions"),
    )
    check(isinstance(data.get("connection_id"), str) and data["connection_id"], step, "a connection_id string", data)
    for f in ("heartbeat_interval", "heartbeat_timeout"):
        check(isinstance(data.get(f), (int, float)) and data[f] > 0, step, f"{f} as a positive number of seconds", data)
    check(TIMESTAMP_RE.match(str(data.get("server_time", ""))), step, "server_time RFC 3339 UTC with ms", data)
    supported = data.get("supported_events") or []
    for ev in ("heartbeat", "odds_update", "user_subscription", "error"):
        check(ev in supported, step, f"{ev} in supported_events", supported)

    # 2. subscribe to odds
    step = "subscribe"
    await send_json(ws, {"event_type": "user_subscription", "message_id": "c1", "data": {"channel": "odds"}})
    reply = await recv_json(ws, step)
    check(reply.get("event_type") == "user_subscription", step, "event_type user_subscription", reply)
    check(reply.get("reply_to") == "c1", step, "reply_to c1", reply)
    rdata = reply.get("data") or {}
    check(rdata.get("channel") == "odds", step, "data.channel odds", reply)
    check(rdata.get("status") == "subscribed", step, "data.status subscribed", reply)
    offset = rdata.get("offset")
    check(isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0, step, "data.offset a u64", reply)
    epoch = rdata.get("epoch")
    check(isinstance(epoch, str) and epoch, step, "data.epoch a non-empty string", reply)

    # 3. publish over HTTP, receive it
    step = "publish"
    status, body = await asyncio.wait_for(
        asyncio.to_thread(
            http_publish, base, key, {"channel": "odds", "event_type": "odds_update", "data": ODDS}
        ),
        TIMEOUT + 1,
    )
    check(status == 200, step, "HTTP 200 from POST /api/publish", f"{status} {body}")
    try:
        results = json.loads(body)["results"]
    except (ValueError, KeyError, TypeError):
        raise Mismatch(f"[{step}] expected {{\"results\":[...]}}; observed {body!r}") from None
    check(isinstance(results, list) and len(results) == 1, step, "exactly one result (channel odds)", results)
    res = results[0]
    check(res.get("channel") == "odds", step, "result channel odds", res)
    check(res.get("offset") == offset + 1, step, f"result offset {offset + 1}", res)
    check(res.get("epoch") == epoch, step, f"result epoch {epoch} (same as the subscribe reply)", res)
    check(isinstance(res.get("recipients"), int) and res["recipients"] >= 1, step, "recipients >= 1", res)

    step = "receive"
    msg = await recv_json(ws, step)
    check(msg.get("event_type") == "odds_update", step, "event_type odds_update", msg)
    check(msg.get("channel") == "odds", step, "channel odds", msg)
    check(msg.get("offset") == offset + 1, step, f"offset {offset + 1} (reply offset + 1)", msg)
    check(msg.get("data") == ODDS, step, f"data equal to the published payload {ODDS}", msg.get("data"))
    check(isinstance(msg.get("message_id"), str) and msg["message_id"], step, "a message_id", msg)
    check(TIMESTAMP_RE.match(str(msg.get("timestamp", ""))), step, "timestamp RFC 3339 UTC with ms", msg)
    check("reply_to" not in msg, step, "no reply_to on a channel message", msg)

    # 4. error path: unknown event
    step = "unknown_event"
    await send_json(ws, {"event_type": "no_such_event", "message_id": "e1", "data": {}})
    err = await recv_json(ws, step)
    check(err.get("event_type") == "error", step, "event_type error", err)
    check(err.get("reply_to") == "e1", step, "reply_to e1", err)
    edata = err.get("data") or {}
    check(edata.get("code") == "unknown_event", step, "data.code unknown_event", err)
    check(isinstance(edata.get("message"), str) and edata["message"], step, "a non-empty data.message", err)
    check(ws.state is State.OPEN, step, "the connection still open", ws.state)

    # 5. heartbeat (also proves the connection is still usable after the error)
    step = "heartbeat"
    await send_json(ws, {"event_type": "heartbeat", "message_id": "h1"})
    hb = await recv_json(ws, step)
    check(hb.get("event_type") == "heartbeat", step, "event_type heartbeat", hb)
    check(hb.get("reply_to") == "h1", step, "reply_to h1", hb)
    check(TIMESTAMP_RE.match(str((hb.get("data") or {}).get("server_time", ""))), step, "data.server_time", hb)

    # 6. close 1000
    step = "close"
    try:
        await asyncio.wait_for(ws.close(1000, "bye"), TIMEOUT + 1)
    except asyncio.TimeoutError:
        raise Mismatch(f"[{step}] expected the close handshake within {TIMEOUT}s; observed a timeout") from None
    check(ws.state is State.CLOSED, step, "state CLOSED", ws.state)
    # The asyncio API keeps the close frames on its sans-I/O protocol object.
    proto = ws.protocol
    check(proto.close_sent is not None and proto.close_sent.code == 1000, step, "our close frame sent with 1000", proto.close_sent)
    check(proto.close_rcvd is not None, step, "a close frame from the server", "no close frame received")
    check(proto.close_rcvd.code == 1000, step, "server close frame code 1000 (echo)", proto.close_rcvd)
    check(ws.close_code == 1000, step, "close_code 1000", ws.close_code)
    check(proto.close_rcvd_then_sent is False, step, "the client initiated the close", proto.close_rcvd_then_sent)


def main():
    base = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HUDDLE_URL", "")).rstrip("/")
    key = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("HUDDLE_API_KEY", "")
    if not base or not key:
        print(__doc__, file=sys.stderr)
        print(f"FAIL {NAME}: need BASE_URL and API_KEY (argv or HUDDLE_URL/HUDDLE_API_KEY)", file=sys.stderr)
        return 2
    if base.startswith("ws://"):
        base = "http://" + base[len("ws://"):]
    ws_base = "ws://" + base[len("http://"):]
    try:
        asyncio.run(asyncio.wait_for(scenario(base, ws_base, key), 30))
    except Mismatch as e:
        print(f"FAIL {NAME}: {e}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print(f"FAIL {NAME}: scenario did not finish within 30s", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001
        print(f"FAIL {NAME}: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"PASS {NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

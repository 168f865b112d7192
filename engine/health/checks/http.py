"""HTTP_GET and SSL_GET (check_http.c, check_ssl.c): one url per check.

The request is keepalived's (``GET path HTTP/1.x``, ``User-Agent: KeepAliveClient``,
``Host`` = the url's, checker's, real server's or virtual server's virtualhost, else
the address and port; ``Connection: close`` for 1.0C and 1.1).  The answer must
arrive within connect_timeout of the connection, its status code must be in one of
the url's ranges (default 200-299), the MD5 of its body must equal ``digest`` and
``regex`` must match (or, with ``regex_no_match``, must not) when they are given.
SSL_GET does not verify the server's certificate unless an ``SSL { ca }`` is given
(keepalived never asks for verification; pyvs then does verify, see README).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import time
from hashlib import md5

from pyvs.engine.health.checks.base import Outcome, Target, close, destination, error_text, open_tcp
from pyvs.engine.health.model import Checker, Url

MAX_BODY = 16 << 20  # a checked page larger than this fails (keepalived reads it all)


def request(c: Checker, url: Url, host: str, port: int) -> bytes:
    vhost = url.virtualhost or c.virtualhost
    if vhost:
        host_header = vhost
    else:
        literal = f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
        host_header = f"{literal}:{port}"
    minor = 1 if c.http_protocol == "1.1" else 0
    close_line = "Connection: close\r\n" if c.http_protocol in ("1.0C", "1.1") else ""
    return (f"GET {url.path} HTTP/1.{minor}\r\nUser-Agent: KeepAliveClient\r\n{close_line}"
            f"Host: {host_header}\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status code and body (Content-Length bytes, else up to the end of the stream)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, headers = head.decode("latin-1").partition("\r\n")
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:60]!r}")
    length = None
    for line in headers.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    if length is not None:
        if length > MAX_BODY:
            raise ValueError(f"body of {length} bytes is too large")
        body = await reader.readexactly(length)
    else:
        body = await reader.read(MAX_BODY)
    return int(parts[1]), body


def judge(url: Url, status: int, body: bytes) -> str | None:
    """None when the answer passes, else why not."""
    codes = url.codes()
    if not any(lo <= status <= hi for lo, hi in codes):
        ranges = " ".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in codes)
        return f"HTTP status {status} not in {ranges}"
    if url.digest:
        got = md5(body).hexdigest()
        if got != url.digest:
            return f"MD5 digest {got} is not {url.digest}"
    if url.regex is not None:
        found = re.search(url.regex, body.decode("utf-8", "replace")) is not None
        if found == url.regex_no_match:
            return "regex matched" if found else "regex did not match"
    return None


async def check(c: Checker, t: Target) -> Outcome:
    url = c.urls[min(t.url_index, len(c.urls) - 1)]
    host, port = destination(c, t)
    name = f"{'SSL' if c.kind == 'SSL_GET' else 'HTTP'} GET {url.path} on {host}:{port}"
    if c.kind == "SSL_GET" and t.ssl_context is None:
        return Outcome(False, f"{name}: no TLS context")
    sni = (c.sni_name or url.virtualhost or c.virtualhost or host) if c.enable_sni else None
    started = time.monotonic()
    try:
        reader, writer, _ = await open_tcp(c, t, server_hostname=sni)
    except (OSError, TimeoutError, ssl.SSLError) as err:
        return Outcome(False, f"{name}: connect: {error_text(err)}")
    try:
        writer.write(request(c, url, host, port))
        left = max(0.001, c.connect_timeout - (time.monotonic() - started))
        status, body = await asyncio.wait_for(read_response(reader), left)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError, ssl.SSLError) as err:
        what = "no complete answer" if isinstance(err, asyncio.IncompleteReadError) else \
            error_text(err)
        return Outcome(False, f"{name}: {what}")
    finally:
        await close(writer)
    why = judge(url, status, body)
    if why:
        return Outcome(False, f"{name}: {why}")
    return Outcome(True, f"{name}: {status}", seconds=time.monotonic() - started)

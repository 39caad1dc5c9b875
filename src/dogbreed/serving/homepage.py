"""``GET /``: a page to try a photo on a server run locally (``dogbreed local-serve``, or the serve image under
``docker run``). SageMaker routes only ``/ping`` and ``/invocations`` to a container, so an endpoint never shows it.

The page is one file of package data (``page/index.html``) with its script and style inline: no build step, and
nothing fetched from elsewhere. It calls ``/invocations`` as any client does, so it works on both fronts. The
Content-Security-Policy allows exactly the page's own inline script and style (by their SHA-256), requests to this
server, and images from ``data:``/``blob:`` URLs (the heatmap and the picked photo's preview): answer text cannot
become script even if the page's escaping failed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources

PAGE_FILE = "page/index.html"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.S)


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy(html: str) -> str:
    """The policy for ``html``: its inline ``<script>`` and ``<style>`` blocks by hash, nothing else inline."""
    hashes = {"script": [], "style": []}
    for kind, text in _INLINE.findall(html):
        hashes[kind].append(_digest(text))
    return "; ".join([
        "default-src 'none'",
        "script-src " + (" ".join(hashes["script"]) or "'none'"),
        "style-src " + (" ".join(hashes["style"]) or "'none'"),
        "img-src data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


@functools.cache
def page() -> tuple[int, bytes, dict]:
    """The page's answer (status, body, headers), read once from the package."""
    html = resources.files(__package__).joinpath(PAGE_FILE).read_text(encoding="utf-8")
    headers = {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": content_security_policy(html),
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        "cache-control": "no-cache",
    }
    return 200, html.encode("utf-8"), headers

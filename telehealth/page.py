"""The call page of the built-in rooms and its files, from telehealth/static (no CDN: the page
works offline and on an isolated network).

The page holds no data: the join token arrives in the URL's fragment, and only the signaling
websocket, once it has checked that token, tells the page anything (who else is in the room).
"""

from __future__ import annotations

from importlib import resources

# What the page may do: its own script and style, its own websocket, media from the camera.
HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "media-src 'self' blob: mediastream:; img-src 'self' data:; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=()",
}
ASSETS = {"call.js": "text/javascript; charset=utf-8", "call.css": "text/css; charset=utf-8"}


def _read(name: str) -> bytes:
    return resources.files("telehealth").joinpath("static", name).read_bytes()


def page() -> bytes:
    return _read("call.html")


def asset(name: str) -> tuple[bytes, str] | None:
    """A file of the page (`call.js`, `call.css`), or None for any other name."""
    media_type = ASSETS.get(name)
    return (_read(name), media_type) if media_type is not None else None

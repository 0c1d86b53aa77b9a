"""The authorize endpoint's server-rendered pages: login form, patient picker, error page."""

from __future__ import annotations

import re
from html import escape
from urllib.parse import urlsplit

from starlette.responses import HTMLResponse

# The login page must not be framed (clickjacking) nor cached.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action {}; frame-ancestors 'none'"
_ORIGIN = re.compile(r"https?://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem}"
    "label{display:block;margin:.6rem 0 .2rem}input{width:100%;padding:.4rem}"
    "button{margin-top:1rem;padding:.5rem 1.2rem}.error{color:#a00}"
)


def _form_action(redirect_uri: str | None) -> str:
    """CSP form-action: our own origin, and the app's. Browsers apply form-action to the
    redirect that answers the form too, and ours goes to the app's redirect_uri with the code."""
    sources = ["'self'"]
    if redirect_uri:
        parts = urlsplit(redirect_uri)
        origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        if _ORIGIN.fullmatch(origin):
            sources.append(origin)
    return " ".join(sources)


def _page(title: str, body: str, status: int = 200, redirect_uri: str | None = None) -> (
    HTMLResponse
):
    html = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    headers = {**PAGE_HEADERS, "Content-Security-Policy": _CSP.format(_form_action(redirect_uri))}
    return HTMLResponse(html, status_code=status, headers=headers)


def _hidden(fields: dict[str, str]) -> str:
    return "".join(
        f"<input type=hidden name='{escape(k)}' value='{escape(v)}'>" for k, v in fields.items()
    )


def login_page(action: str, fields: dict[str, str], client_name: str, error: str = "") -> (
    HTMLResponse
):
    message = f"<p class=error>{escape(error)}</p>" if error else ""
    body = (
        f"<p>Sign in to allow <b>{escape(client_name)}</b> access.</p>{message}"
        f"<form method=post action='{escape(action)}'>{_hidden(fields)}"
        "<label for=username>User name</label>"
        "<input id=username name=username autocomplete=username required>"
        "<label for=password>Password</label>"
        "<input id=password name=password type=password autocomplete=current-password required>"
        "<label for=totp>One-time code (if enrolled)</label>"
        "<input id=totp name=totp inputmode=numeric autocomplete=one-time-code>"
        "<button type=submit>Sign in</button></form>"
    )
    return _page("Sign in", body, 401 if error else 200, fields.get("redirect_uri"))


def patient_picker(action: str, fields: dict[str, str], choices: tuple[str, ...],
                   error: str = "") -> HTMLResponse:
    message = f"<p class=error>{escape(error)}</p>" if error else ""
    if choices:
        options = "".join(
            f"<label><input type=radio name=patient value='{escape(p)}' required> "
            f"Patient/{escape(p)}</label>" for p in choices
        )
    else:
        options = ("<label for=patient>Patient id</label>"
                   "<input id=patient name=patient required pattern='[A-Za-z0-9\\-.]{1,64}'>")
    body = (
        f"<p>Choose the patient this app will work with.</p>{message}"
        f"<form method=post action='{escape(action)}'>{_hidden(fields)}{options}"
        "<button type=submit>Continue</button></form>"
    )
    return _page("Select patient", body, redirect_uri=fields.get("redirect_uri"))


def error_page(description: str) -> HTMLResponse:
    # Shown instead of redirecting when the client or redirect_uri cannot be trusted.
    return _page("Authorization error", f"<p class=error>{escape(description)}</p>", 400)

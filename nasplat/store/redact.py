"""Keep database passwords out of logs, MLflow params and error messages."""

from __future__ import annotations

import re

_MASK = "***"
# scheme://user:password@host  (password: anything up to the last '@' before the host part)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^\s/]*)(?P<tail>@)")
# libpq key/value DSNs and query strings: password=secret, password='se cret'
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|\"[^\"]*\"|[^\s&;,)]+)", re.IGNORECASE)


def _password_of(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - a malformed URL has no password we can find this way
        return None


def redact_url(url: str) -> str:
    """`url` with its password (if any) replaced by `***`; everything else unchanged."""
    return redact_text(url, url)


def redact_text(text: str, *urls: str) -> str:
    """`text` (e.g. an exception message) with every URL password, every `password=...` pair and
    every literal password (4 characters or more) of `urls` replaced by `***`."""
    out = text
    for url in urls:
        pw = _password_of(url)
        # literal replacement catches passwords echoed in any form; very short ones would mangle
        # unrelated text, and the patterns below still catch them in URL and key=value form
        if pw and len(str(pw)) >= 4:
            out = out.replace(str(pw), _MASK)
            from urllib.parse import quote

            out = out.replace(quote(str(pw), safe=""), _MASK)
    out = _URL_PASSWORD.sub(lambda m: m.group("head") + _MASK + m.group("tail"), out)
    out = _KV_PASSWORD.sub(lambda m: m.group("head") + _MASK, out)
    return out

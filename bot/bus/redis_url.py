"""Redis URL helpers that never leak a password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by `***` (`redis://user:***@host:6379/0`); never raises."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def url_password(url: str) -> str | None:
    """The password a URL carries (`redis://user:PASSWORD@host`), or None (also for an unparseable URL)."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None

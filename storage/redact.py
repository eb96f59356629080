"""Masking credentials in URLs, for every printout and log line (``redis://:pw@host`` → ``redis://:***@host``)."""

from __future__ import annotations

import logging
import re

# scheme://[user][:password]@ — the password (or a lone token before "@") is what must never be shown.
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*)(?::(?P<pw>[^@/\s]*))?@")
MASK = "***"


def mask_urls(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (a lone user token is a secret too)."""

    def sub(m: re.Match[str]) -> str:
        if m.group("pw") is not None:
            return f"{m.group('scheme')}{m.group('user')}:{MASK}@"
        return f"{m.group('scheme')}{MASK}@" if m.group("user") else m.group(0)

    return _CREDENTIALS.sub(sub, text)


class MaskingFilter(logging.Filter):
    """Rewrites each record's final message (arguments and traceback included) with :func:`mask_urls`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_urls(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_urls(record.exc_text)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def install_log_masking(logger: logging.Logger | None = None) -> None:
    """Mask URLs in every handler of ``logger`` (the root logger by default); idempotent."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())

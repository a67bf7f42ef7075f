"""The bearer token, for ``serve`` and for the commands that talk to a server.

A token given as ``--token`` shows in ``ps`` and shell history; the same token
can come from a file (``--token-file PATH``) or the ``STELE_TOKEN`` environment
variable instead. One source at a time on the command line; the environment is
the fallback.
"""

from __future__ import annotations

import argparse
import os
import re

from actors import SteleError

ENV = "STELE_TOKEN"
_VALID = re.compile(r"[\x21-\x7e]+")
"""Visible ASCII: what an HTTP header carries unchanged."""


def add_token_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--token`` and ``--token-file`` on ``parser``."""
    parser.add_argument(
        "--token", help=f"bearer token {what} (visible in ps: prefer --token-file or {ENV})"
    )  # fmt: skip
    parser.add_argument("--token-file", metavar="PATH", help=f"read the bearer token {what} from this file")


def token_from(args: argparse.Namespace) -> str | None:
    """The token from ``--token``, ``--token-file`` or ``STELE_TOKEN`` (None when none is given)."""
    if args.token is not None and args.token_file is not None:
        raise SteleError("give --token or --token-file, not both")
    if args.token_file is not None:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SteleError(f"cannot read the token file {args.token_file}: {exc}") from None
        where = f"the token file {args.token_file}"
    elif args.token is not None:
        token, where = args.token, "--token"
    else:
        token, where = os.environ.get(ENV, "").strip(), ENV
        if not token:
            return None
    if not _VALID.fullmatch(token):
        raise SteleError(f"{where}: a token must be visible ASCII characters without spaces, and not empty")
    return token

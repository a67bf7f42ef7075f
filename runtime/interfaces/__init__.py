"""The runtime's interfaces: the command line, the HTTP server, ``serve``, the demo, ``check``.

They import the engine (``runtime``) and storage, and are never imported by
them: the engine knows nothing of how it is driven. ``python -m runtime``
(and the ``stele`` script) runs :func:`main`.
"""

from ._cli import main, parser
from ._http import App

__all__ = ("App", "main", "parser")

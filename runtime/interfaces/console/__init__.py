"""The console: see, time-travel and operate agents in a browser.

Mounted by ``serve`` at ``/ui`` behind the API's own authentication, and served
read-only over any journal file by ``python -m runtime ui``. Pages are
rendered on the server from templates and static files shipped in this
package (no build step, nothing fetched from elsewhere); everything a journal
holds is shown as text.
"""

from ._app import Console
from ._auth import Sessions
from ._source import Operator, Source

__all__ = ("Console", "Operator", "Sessions", "Source")

"""snapgraph: a GraphQL gateway over the VM-sandbox snapshots REST API."""

from snapgraph._version import __version__
from snapgraph.app import create_app
from snapgraph.settings import Settings

__all__ = ["Settings", "__version__", "create_app"]

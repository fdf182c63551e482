"""The reward server: dynamic batching, text / chat / token-id input, limits, auth, metrics.

    from rewardkit.serve import create_app, serve
    serve("path/to/reward-model", port=8000, api_key="...")

See app.py for the endpoints and schemas.py for the wire format.
"""

from rewardkit.serve.app import create_app
from rewardkit.serve.batcher import DynamicBatcher, QueueFull
from rewardkit.serve.limits import DEFAULT_MAX_BODY_BYTES
from rewardkit.serve.server import serve

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DynamicBatcher", "QueueFull", "create_app", "serve"]

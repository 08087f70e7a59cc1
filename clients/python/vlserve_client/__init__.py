"""Python client for vlserve: captioning, image-text retrieval and VQA over HTTP.

    from vlserve_client import Client

    with Client("http://localhost:8000") as client:
        client.caption("cat.jpg").captions[0][0].text
        client.score("cat.jpg", ["a cat", "a dog"], heads=["itc", "itm"]).itm
        client.vqa("cat.jpg", "what animal is this?").answers[0].text

`AsyncClient` has the same methods for asyncio. Errors are subclasses of `VlserveError`
(the tree is at the top of `vlserve_client._exceptions`).
"""

from ._async_client import AsyncClient
from ._bulk import ItemResult
from ._client import Client
from ._exceptions import (APIConnectionError, APIStatusError, APITimeoutError, AuthenticationError, BadRequestError,
                          DeadlineExceededError, ImageFetchError, InternalServerError, NotFoundError,
                          PayloadTooLargeError, ServiceUnavailableError, UnprocessableEntityError,
                          UnsupportedMediaTypeError, VlserveError)
from ._models import (Answer, Capabilities, CapfiltResponse, Caption, CaptionResponse, EmbeddingsResponse,
                      FilteredCaption, GenerationOptions, ModelInfo, RankedAnswer, RankedItem, RankResponse,
                      ScoreResponse, Usage, VqaResponse)
from ._retry import Retry
from ._version import __version__

__all__ = [
    "APIConnectionError", "APIStatusError", "APITimeoutError", "Answer", "AsyncClient", "AuthenticationError",
    "BadRequestError", "Capabilities", "CapfiltResponse", "Caption", "CaptionResponse", "Client",
    "DeadlineExceededError", "EmbeddingsResponse", "FilteredCaption", "GenerationOptions", "ImageFetchError",
    "InternalServerError", "ItemResult", "ModelInfo", "NotFoundError", "PayloadTooLargeError", "RankResponse",
    "RankedAnswer", "RankedItem", "Retry", "ScoreResponse", "ServiceUnavailableError", "UnprocessableEntityError",
    "UnsupportedMediaTypeError", "Usage", "VlserveError", "VqaResponse", "__version__",
]

# Show the public names as living here (as httpx does), not in private modules.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("vlserve_client._"):
        _obj.__module__ = "vlserve_client"
del _name, _obj

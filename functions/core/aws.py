"""AWS clients from botocore, without boto3 (issue 11, cold start).

boto3 is a thin layer over botocore that dsrflow does not use (no resources, no managed transfers), yet
importing it imports s3transfer and, through it, multiprocessing: about 15 ms of every cold start. A client
from one botocore session per container is what `boto3.client` builds: the same credential chain, region,
retries and endpoints, and the same event hooks (X-Ray's patch, moto's stubber in tests).
"""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.config import Config
    from botocore.session import Session


# A botocore session is not thread-safe (its credential and component lookups), while its clients are: clients
# are created one at a time (the local engine runs many executions' tasks on threads).
_creating = threading.Lock()


@cache
def session() -> Session:
    from botocore.session import get_session

    return get_session()


def client(service: str, config: Config | None = None, **kwargs: Any) -> Any:
    """A new client for `service` (callers cache it: a client is the expensive part, the session is shared)."""
    with _creating:
        return session().create_client(service, config=config, **kwargs)


def reset() -> None:
    """Forget the session (tests and the local engine change the environment between runs)."""
    session.cache_clear()

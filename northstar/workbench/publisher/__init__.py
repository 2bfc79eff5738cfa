"""Publishing drafts as immutable packages, activation overlays, and following them on replicas."""

from .actor import DraftStoreActor as DraftStoreActor
from .actor import DraftStoreClient as DraftStoreClient
from .actor import Publish as Publish
from .actor import Publisher as Publisher
from .actor import PublisherClient as PublisherClient
from .actor import Rollback as Rollback
from .actor import Unpublish as Unpublish
from .live import LiveTools as LiveTools
from .live import ToolHost as ToolHost
from .service import PublisherService as PublisherService
from .watcher import RegistryWatcher as RegistryWatcher

__all__ = [
    "DraftStoreActor",
    "DraftStoreClient",
    "LiveTools",
    "Publish",
    "Publisher",
    "PublisherClient",
    "PublisherService",
    "RegistryWatcher",
    "Rollback",
    "ToolHost",
    "Unpublish",
]

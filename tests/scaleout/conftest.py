"""Real replicas: 3 ``northstar serve`` processes on one PostgreSQL schema and one Redis.

Each module gets a fresh schema and a fresh Redis key prefix (others are not disturbed) and
drops both afterwards. Replicas share what docs/deployment.md says they must share: the store,
the audit key, the upstream secrets key, the limits engine and its prefix; the first replica
writes the bootstrap admin key, the others use it.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import GatewayProcess
from tests.pg import base_url, fresh_schema, pg_unavailable_reason, schema_url

REDIS_URL = "redis://127.0.0.1:6379/0"


@functools.cache
def redis_unavailable_reason() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1.0):
            return None
    except OSError as exc:
        return f"no Redis server answers at 127.0.0.1:6379 ({exc.strerror or exc})"


def require_services() -> None:
    reason = pg_unavailable_reason() or redis_unavailable_reason()
    if reason:
        pytest.skip(reason)


@dataclass
class Cluster:
    replicas: list[GatewayProcess]
    schema: str
    prefix: str
    shared: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    @property
    def admin(self) -> dict[str, str]:
        return self.replicas[0].admin_headers


def replica_env(schema: str, prefix: str, shared: Path, **extra: str) -> dict[str, str]:
    return {
        "NORTHSTAR_STORE_URL": schema_url(base_url(), schema),
        "NORTHSTAR_AUDIT_KEY_FILE": str(shared / "audit.key"),
        "NORTHSTAR_SECRETS_KEY_FILE": str(shared / "secrets.key"),
        "NORTHSTAR_LIMITS_BACKEND": "redis",
        "NORTHSTAR_REDIS_URL": REDIS_URL,
        "NORTHSTAR_LIMITS_PREFIX": prefix,
        **extra,
    }


def start_replicas(root: Path, env: dict[str, str], n: int) -> list[GatewayProcess]:
    """The first replica alone (it creates the keys and the schema), the others together."""
    first = GatewayProcess(root / "r0", env=env).start()
    others = [GatewayProcess(root / f"r{i}", env=env, admin_key_from=first.data_dir) for i in range(1, n)]
    errors: list[BaseException] = []

    def start(gw: GatewayProcess) -> None:
        try:
            gw.start()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(gw,)) for gw in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for gw in [first, *others]:
            gw.kill()
        raise errors[0]
    return [first, *others]


def drop(schema: str, prefix: str) -> None:
    subprocess.run(["psql", base_url(), "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
                   capture_output=True, check=False, timeout=30)
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_services()
    root: Path = tmp_path_factory.mktemp("replicas")
    schema, prefix = fresh_schema("so"), f"nstest-{uuid.uuid4().hex[:10]}"
    shared = root / "shared"
    shared.mkdir()
    # Low limits so a test can saturate them: 30 calls/s per principal, bursts of 10; 3 sessions.
    env = replica_env(schema, prefix, shared, NORTHSTAR_RATE_LIMIT_PER_PRINCIPAL_PER_S="30",
                      NORTHSTAR_RATE_LIMIT_BURST="10", NORTHSTAR_MAX_SESSIONS_PER_PRINCIPAL="3")
    replicas = start_replicas(root, env, 3)
    try:
        yield Cluster(replicas, schema, prefix, shared, env)
    finally:
        for gw in replicas:
            try:
                gw.stop()
            except Exception:
                gw.kill()
        drop(schema, prefix)

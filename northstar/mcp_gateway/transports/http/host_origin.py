"""DNS-rebinding protection: which Host and Origin values a request may carry (421 / 403)."""

from __future__ import annotations


class HostOriginPolicy:
    """Allowed Host and Origin values; ``host:*`` patterns match any port."""

    def __init__(self, hosts: list[str], origins: list[str]) -> None:
        self.hosts = hosts
        self.origins = origins

    @classmethod
    def for_bind(cls, host: str, extra_hosts: list[str], extra_origins: list[str]) -> HostOriginPolicy:
        loop_hosts = ["127.0.0.1", "localhost", "[::1]"]
        hosts = [*extra_hosts]
        origins = [*extra_origins]
        if host in ("127.0.0.1", "localhost", "::1") or not extra_hosts:
            hosts += [*loop_hosts, *(f"{h}:*" for h in loop_hosts)]
            origins += [f"{s}://{h}:*" for s in ("http", "https") for h in loop_hosts]
            origins += [f"{s}://{h}" for s in ("http", "https") for h in loop_hosts]
        if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
            hosts += [host, f"{host}:*"]
        return cls(hosts, origins)

    @staticmethod
    def _match(value: str, allowed: list[str]) -> bool:
        if "*" in allowed or value in allowed:
            return True
        # "host:*" matches that host with any port: digits only ("localhost:1.evil.com" is no port)
        return any(
            a.endswith(":*") and value.startswith(a[:-1]) and value[len(a) - 1:].isdigit() for a in allowed
        )

    def host_ok(self, host: str | None) -> bool:
        return bool(host) and self._match(host.lower(), self.hosts)  # type: ignore[union-attr]

    def origin_ok(self, origin: str | None) -> bool:
        return origin is None or self._match(origin.lower(), self.origins)

"""Redis Sentinel: the URL form coatcheck reads, and the redis-py clients it makes from it.

`redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]` names the
sentinels (any number, each `host:port`; the port defaults to 26379) and the service they
watch; `db` defaults to 0. The user and password are sent to the master (and would be to a
replica), not to the sentinels: sentinels that require a password are not supported by the
URL form (give the store a client made with redis-py's `Sentinel(sentinel_kwargs=...)`). The
query takes only the pool options every Redis store URL takes (`max_connections`,
`pool_timeout`); anything else is a `ConfigurationError`, as is a URL without a sentinel or
a service name.

The store asks the sentinels for the master's address (`redis.sentinel.Sentinel`, or its
asyncio twin) whenever it opens a connection, so after a failover the next connection goes
to the promoted replica; a connection still open to the old master fails (or, once that
master is back as a replica, answers READONLY, which redis-py turns into a connection error)
and is replaced. Every such failure is a `StoreUnavailable`: a 503, never a 500. The minimal
RESP lane of `stores.resp` serves only plain single-server `redis://` URLs; a Sentinel
store sends every command through redis-py's master connections, gated as the lane would
be (at most `max_connections` in flight, waiting up to `pool_timeout`).

Nothing here holds a password after the client is made, and no message quotes the URL.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import unquote

import redis.asyncio.sentinel
import redis.sentinel

from ..exceptions import ConfigurationError

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SCHEME",
    "SentinelAddress",
    "aclose",
    "async_master",
    "close",
    "is_sentinel_url",
    "parse",
    "sync_master",
]

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
_FORM = "redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]"


class SentinelAddress(NamedTuple):
    """What a `redis+sentinel://` URL says: where the sentinels are, which service they
    watch, and how to log in to its master."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None

    def __repr__(self) -> str:  # never the password
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"SentinelAddress({hosts}/{self.service}/{self.db})"


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() == SCHEME


def parse(url: str) -> SentinelAddress:
    """The sentinels, service, db and credentials of a `redis+sentinel://` URL (pool
    options already removed); ConfigurationError, naming the form, for anything else."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != SCHEME:
        raise ConfigurationError(f"a Redis Sentinel URL looks like {_FORM}")
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    if query or fragment:
        raise ConfigurationError(
            "a redis+sentinel URL takes only max_connections and pool_timeout in its query"
        )
    netloc, _, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if username is not None and password is None:
            raise ConfigurationError(
                "a redis+sentinel URL with a user needs its password too (user:password@)"
            )
    sentinels = tuple(_host_port(item) for item in hosts.split(",") if item)
    parts = [unquote(part) for part in path.split("/") if part]
    if not sentinels or not parts or len(parts) > 2:
        raise ConfigurationError(f"a Redis Sentinel URL looks like {_FORM}")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ConfigurationError("the db of a redis+sentinel URL is a whole number")
        db = int(parts[1])
    return SentinelAddress(sentinels, parts[0], db, username, password)


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [ipv6]:port
        host, _, tail = item[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host or (port and not port.isdigit()) or not 0 < int(port or 1) < 65536:
        raise ConfigurationError(f"a sentinel in a redis+sentinel URL is host:port, as in {_FORM}")
    return host, int(port) if port else DEFAULT_SENTINEL_PORT


def _manager(client: Any) -> Any:
    """The `Sentinel` behind a client `sync_master` or `async_master` made (None for any
    other client)."""
    return getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)


def close(client: Any) -> None:
    """Close the connections to the sentinels behind `client` (the master's go with it)."""
    manager = _manager(client)
    if manager is not None:
        manager.close()


async def aclose(client: Any) -> None:
    """The asyncio twin of `close`."""
    manager = _manager(client)
    if manager is not None:
        await manager.aclose()


def _master_options(address: SentinelAddress, options: dict[str, Any]) -> dict[str, Any]:
    found = dict(options, db=address.db)
    if address.username is not None:
        found["username"] = address.username
    if address.password is not None:
        found["password"] = address.password
    return found


def sync_master(
    address: SentinelAddress, redis_class: type[Any], max_connections: int, options: dict[str, Any]
) -> Any:
    """A `redis_class` client of the service's master, through the sentinels. `options` are
    the store's socket timeouts and retry; the sentinels get the same timeouts."""
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(address.sentinels),
        sentinel_kwargs={
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
        },
    )
    return sentinel.master_for(  # type: ignore[no-untyped-call]
        address.service,
        redis_class=redis_class,
        max_connections=max_connections,
        **_master_options(address, options),
    )


def async_master(
    address: SentinelAddress, redis_class: type[Any], max_connections: int, options: dict[str, Any]
) -> Any:
    """The asyncio twin of `sync_master`."""
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(address.sentinels),
        sentinel_kwargs={
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
        },
    )
    return sentinel.master_for(
        address.service,
        redis_class=redis_class,
        max_connections=max_connections,
        **_master_options(address, options),
    )

"""Whether this replica may act. kopf pauses its own event handling while a peer with a higher (or the
same) priority is alive, but the controller's work queue, timers and encoder polls run on their own:
they wait on `Leadership.active`, decided by kopf's rule over the same peering objects."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp

from onair.kubeclient import ApiError, KubeClient

log = logging.getLogger("onair.operator.leadership")
PEERING_GROUP = "/apis/kopf.dev/v1"


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def may_act(peerings: Iterable[Mapping[str, Any]], own_id: str, priority: int, now: dt.datetime) -> bool:
    """kopf's rule (peering.process_peering_event): pause while another live peer has a higher
    priority, or the same one (then all of them pause)."""
    for peering in peerings:
        for peer_id, info in (peering.get("status") or {}).items():
            if peer_id == own_id or not isinstance(info, Mapping):
                continue
            lastseen = _parse_time(info.get("lastseen"))
            lifetime = dt.timedelta(seconds=int(info.get("lifetime", 60)))
            if lastseen is not None and lastseen + lifetime <= now:
                continue  # dead: its record expired
            if int(info.get("priority", 0)) >= priority:
                return False
    return True


class Leadership:
    def __init__(self, kube: KubeClient, *, standalone: bool, peering_name: str, priority: int, own_id: str,
                 interval: float = 1.0) -> None:
        self.kube = kube
        self.standalone = standalone
        self.peering_name = peering_name
        self.priority = priority
        self.own_id = own_id
        self.interval = interval
        self.active = asyncio.Event()
        if standalone:
            self.active.set()

    async def peerings(self) -> list[dict[str, Any]]:
        """The cluster-wide peering object and the namespaced ones of our name (kopf uses the first when
        it watches the whole cluster, one per namespace otherwise)."""
        found = []
        cluster = await self.kube.get_or_none(f"{PEERING_GROUP}/clusterkopfpeerings/{self.peering_name}")
        if cluster is not None:
            found.append(cluster)
        namespaced = await self.kube.get(f"{PEERING_GROUP}/kopfpeerings",
                                         fieldSelector=f"metadata.name={self.peering_name}")
        return found + list(namespaced.get("items") or [])

    async def run(self, on_resume: Callable[[], None], on_stand_by: Callable[[], None] = lambda: None) -> None:
        """Keeps `active` current; calls `on_resume()` when this replica takes over, `on_stand_by()` when
        another one does."""
        if self.standalone:
            return
        while True:
            try:
                acting = may_act(await self.peerings(), self.own_id, self.priority, dt.datetime.now(dt.UTC))
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                log.warning("could not read the peering objects (keeping the current state): %s", error)
            else:
                if acting and not self.active.is_set():
                    log.info("acting: no live peer with a higher or the same priority")
                    self.active.set()
                    on_resume()
                elif not acting and self.active.is_set():
                    log.info("standing by: a live peer has a higher or the same priority")
                    self.active.clear()
                    on_stand_by()
            await asyncio.sleep(self.interval)

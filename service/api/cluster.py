"""/v1/cluster: the replicas, the models each one trains, and the latest handoffs (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.access import ADMIN
from service.api.deps import HubDep, SettingsDep
from service.api.schemas import ClusterMember, ClusterView

router = APIRouter(tags=["cluster"], dependencies=ADMIN)


@router.get("/v1/cluster")
async def cluster(hub: HubDep, settings: SettingsDep) -> ClusterView:
    if hub.cluster is None:  # one process: it trains every model
        me = ClusterMember(replica=settings.replica_id, models=[m.name for m in hub.all()])
        return ClusterView(replica=settings.replica_id, members=[me], handoffs=[])
    members, handoffs = await hub.cluster.view()
    return ClusterView(
        replica=settings.replica_id,
        members=[ClusterMember(replica=r, models=models) for r, models in members],
        handoffs=handoffs,
    )

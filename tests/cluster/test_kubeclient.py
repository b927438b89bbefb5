"""onair.kubeclient against the real API server: what the operator's periodic re-list relies on."""

from __future__ import annotations

import uuid

from localplatform.platform import PlatformInfo

from onair.kubeclient import Credentials, KubeClient, resource_path


async def test_pages_of_metadata_only_name_every_object_without_its_contents(platform: PlatformInfo) -> None:
    kube = KubeClient(Credentials.from_kubeconfig(platform.kubeconfig))
    namespace = f"pages-{uuid.uuid4().hex[:8]}"
    try:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
        names = {f"cm-{i}" for i in range(5)}
        for name in names:
            await kube.create(resource_path("v1", "configmaps", namespace),
                              {"metadata": {"name": name, "labels": {"pages": "yes"}}, "data": {"big": "x" * 1000}})
        pages = [page async for page in kube.pages(resource_path("v1", "configmaps", namespace),
                                                   metadata_only=True, labelSelector="pages=yes", limit=2)]
        assert len(pages) == 3  # 2 + 2 + 1: the continue tokens were followed
        items = [item for page in pages for item in page["items"]]
        assert {item["metadata"]["name"] for item in items} == names
        assert all(set(item) <= {"kind", "apiVersion", "metadata"} for item in items)  # no data
        assert len({page["metadata"]["resourceVersion"] for page in pages}) == 1  # one snapshot
    finally:
        await kube.delete(f"/api/v1/namespaces/{namespace}")
        await kube.close()

"""The REST gateway against the real API server: the contract endpoint by endpoint, read-your-writes,
paging while jobs are created, the auth matrix, and the CRs the calls leave behind."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from fixed_secrets import STREAM_KEY_SEED
from gateway_support import PINNED_PROJECT, Project, RunningGateway, custom, get_cr, make_project
from kubernetes import client
from waiting import wait_until

from onair.api_gateway import schemas
from onair.streamkeys import derive_stream_key

CREATE: dict[str, Any] = {"jobTemplateId": 7, "destination": "live/news", "bucket": "media",
          "description": "evening news", "cdnDistribution": False,
          "input": {"filePath": "live/news", "serverType": 0, "inputClass": 1,
                    "callbackUrl": "https://hooks.example.com/onair"}}
ENVELOPE = {"success", "errors", "messages", "result", "resultInfo"}
STATISTICS_NULL = dict.fromkeys(["width", "height", "framerate", "videoDataRate", "videoCodecId", "audioDataRate",
                                 "audioSampleRate", "audioSampleSize", "audioCodecId", "audioChannels", "stereo",
                                 "encoder"])
RESULT_INFO = {"totalCount": int, "pageIndex": int, "pageSize": int, "totalPages": int, "hasNextPage": bool,
               "hasPreviousPage": bool}


def is_guid(value: Any) -> bool:
    try:
        return str(uuid.UUID(str(value))) == str(value).lower()
    except ValueError:
        return False


def check_envelope(body: dict[str, Any], success: bool = True) -> None:
    assert set(body) == ENVELOPE
    assert body["success"] is success
    assert isinstance(body["errors"], list) and isinstance(body["messages"], list)
    if not success:
        assert body["resultInfo"] is None
        return
    # The reference shows resultInfo on every success, a single object's too.
    for name, kind in RESULT_INFO.items():
        assert isinstance(body["resultInfo"][name], kind), name


def create(gateway: RunningGateway, project: Project, headers: dict[str, str], **changes: Any) -> dict[str, Any]:
    response = requests.post(project.url(gateway, "/livejobs"), json={**CREATE, **changes}, headers=headers,
                             timeout=10)
    assert response.status_code == 201, response.text
    return dict(response.json()["result"])


def test_create_returns_the_contract_and_reads_its_own_write(gateway: RunningGateway, project: Project,
                                                             kube: client.ApiClient) -> None:
    headers = gateway.headers()
    response = requests.post(project.url(gateway, "/livejobs"), json=CREATE, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    body = response.json()
    check_envelope(body)
    job = body["result"]
    schemas.LiveJobDetail.model_validate(job)
    assert is_guid(job["name"]) and is_guid(job["key"]) and job["projectId"] == project.id
    assert job["description"] == "evening news" and job["bucket"] == "media" and job["destination"] == "live/news"
    assert job["jobTemplateId"] == 7 and job["cdnDistribution"] is False and isinstance(job["id"], int)
    assert job["input"]["filePath"] == "live/news" and job["input"]["serverType"] == 0
    assert job["input"]["inputClass"] == 1 and job["input"]["callbackUrl"] == "https://hooks.example.com/onair"
    assert [o["value"] for o in job["input"]["serverTypeOptions"]] == ["RTMP", "SRT", "HLS"]
    assert [o["enabled"] for o in job["input"]["inputClassOptions"]] == [False, True]
    assert job["tags"] == "standard,rtmp,jobTemplateId:7"  # the documented pricing tags

    # Read-your-writes: no waiting between the POST and these GETs.
    for ident in (job["name"], str(job["id"])):
        got = requests.get(project.url(gateway, f"/livejobs/{ident}"), headers=headers, timeout=10)
        assert got.status_code == 200, got.text
        check_envelope(got.json())
        assert got.json()["result"]["key"] == job["key"]
    listed = requests.get(project.url(gateway, "/livejobs"), params={"search": job["name"][:13]}, headers=headers,
                          timeout=10).json()
    check_envelope(listed)
    assert [row["name"] for row in listed["result"]] == [job["name"]]
    row = listed["result"][0]
    assert set(row) >= {"id", "name", "key", "status", "description", "filePath", "insertDate", "startDateTime",
                        "endDateTime"}
    assert row["filePath"] == "live/news" and row["key"] == job["key"]
    assert datetime.fromisoformat(row["insertDate"].replace("Z", "+00:00")).tzinfo is not None

    # What the API server holds: the CR with its labels. The key is the one the operator derives for
    # the encoder's Secret from the shared seed and the CR's uid; the gateway wrote nothing else.
    cr = get_cr(kube, project.namespace, "livejobs", job["name"])
    assert cr["metadata"]["labels"] == {"onair.dev/project-id": project.id, "onair.dev/id": str(job["id"])}
    assert cr["spec"]["input"] == {"serverType": "RTMP", "inputClass": "Standard"}
    assert cr["spec"]["destination"]["path"] == "live/news" and cr["spec"]["destination"]["bucket"] == "media"
    # The contract's body without filePath: destination alone is the place in the bucket, and reads back.
    documented = {k: v for k, v in CREATE.items() if k != "input"}
    documented.update(destination="shows/late", input={"serverType": 0, "inputClass": 1})
    response = requests.post(project.url(gateway, "/livejobs"), json=documented, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    late = response.json()["result"]
    assert get_cr(kube, project.namespace, "livejobs", late["name"])["spec"]["destination"] == {
        "bucket": "media", "path": "shows/late", "cdnDistribution": False}
    got = requests.get(project.url(gateway, f"/livejobs/{late['id']}"), headers=headers, timeout=10).json()["result"]
    assert (got["destination"], got["bucket"], got["input"]["filePath"]) == ("shows/late", "media", "shows/late")
    assert job["key"] == derive_stream_key(STREAM_KEY_SEED, project.namespace, job["name"], cr["metadata"]["uid"])
    secrets = client.CoreV1Api(kube).list_namespaced_secret(project.namespace, label_selector="onair.dev/job")
    # (An operator watching this namespace, when another test started one, makes the encoder's own.)
    writers = {field.manager for secret in secrets.items for field in secret.metadata.managed_fields or []}
    assert writers <= {"onair-operator"}, writers


def test_idempotency_key(gateway: RunningGateway, project: Project) -> None:
    headers = {**gateway.headers(), "Idempotency-Key": str(uuid.uuid4())}
    first = requests.post(project.url(gateway, "/livejobs"), json=CREATE, headers=headers, timeout=10)
    again = requests.post(project.url(gateway, "/livejobs"), json=CREATE, headers=headers, timeout=10)
    assert first.status_code == again.status_code == 201
    assert first.json()["result"]["name"] == again.json()["result"]["name"]
    assert first.json()["result"]["key"] == again.json()["result"]["key"]
    listed = requests.get(project.url(gateway, "/livejobs"), headers=headers, timeout=10).json()
    assert listed["resultInfo"]["totalCount"] == 1


def test_jobs_made_with_kubectl_and_status_from_the_operator_show_up(gateway: RunningGateway, project: Project,
                                                                    kube: client.ApiClient) -> None:
    name = "made-with-kubectl"
    custom(kube).create_namespaced_custom_object("onair.dev", "v1alpha1", project.namespace, "livejobs", {
        "apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob", "metadata": {"name": name},
        "spec": {"jobTemplateId": 7, "input": {"serverType": "SRT"}, "destination": {"bucket": "media"}}})
    headers = gateway.headers("read")
    job = wait_until(lambda: requests.get(project.url(gateway, f"/livejobs/{name}"), headers=headers, timeout=5)
                     .json()["result"], 15, "the gateway to see the kubectl-made job")
    assert job["id"] >= 2**30 and job["input"]["serverType"] == 1
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    custom(kube).patch_namespaced_custom_object_status("onair.dev", "v1alpha1", project.namespace, "livejobs", name, {
        "status": {"phase": "Live", "timings": [{"time": now, "phase": "Live", "reason": "PublisherConnected"}],
                   "statistics": {"width": 1920, "height": 1080, "framerate": 25, "videoCodecId": 7},
                   "outputs": [{"name": "360p", "status": "Running", "segmentsWritten": 3},
                               {"name": "720p", "status": "Stalled", "segmentsWritten": 1, "lastSegmentTime": now}],
                   "urls": {"srtUrl": "srt://10.0.0.9:9000?streamid=", "storageMasterFile": "http://s3/media/x/master.m3u8"}}})
    wait_until(lambda: requests.get(project.url(gateway, f"/livejobs/{job['id']}"), headers=headers, timeout=5)
               .json()["result"]["status"] == "Live", 15, "the status to reach the gateway")
    stats = requests.get(project.url(gateway, f"/livejobs/{name}/stats"), headers=headers, timeout=5).json()
    assert stats["result"] == [{**STATISTICS_NULL, "width": 1920, "height": 1080, "framerate": 25, "videoCodecId": 7}]
    timings = requests.get(project.url(gateway, f"/livejobs/{name}/timings"), headers=headers, timeout=5).json()
    assert timings["result"] == [{"status": "Live", "childStatus": "PublisherConnected", "startDateTime": now,
                                  "messageComment": None}]
    # outputId: the job's phases, then that output's own state.
    stalled = requests.get(project.url(gateway, f"/livejobs/{name}/timings"), params={"outputId": "2"},
                           headers=headers, timeout=5).json()
    assert stalled["result"] == [*timings["result"], {"status": "Stalled", "childStatus": "720p",
                                                      "startDateTime": now, "messageComment": "segments written: 1"}]
    running = requests.get(project.url(gateway, f"/livejobs/{name}/timings"), params={"outputId": "1"},
                           headers=headers, timeout=5).json()
    assert [(r["status"], r["childStatus"]) for r in running["result"]] == [("Live", "PublisherConnected"),
                                                                            ("Running", "360p")]
    outputs = requests.get(project.url(gateway, "/livejobs/outputs"), headers=headers, timeout=5).json()
    assert [(o["liveJobId"], o["outputId"], o["status"], o["counter"]) for o in outputs["result"]] == [
        (job["id"], 1, 1, 3), (job["id"], 2, 2, 1)]
    for row in outputs["result"]:
        schemas.LiveJobOutput.model_validate(row)
        assert is_guid(row["lockKey"])


def test_paging_while_jobs_are_created(gateway: RunningGateway, project: Project) -> None:
    headers = gateway.headers()
    existing = [create(gateway, project, headers, description=f"pre {i}")["id"] for i in range(24)]
    stop = threading.Event()
    added: list[int] = []

    def keep_creating() -> None:
        while not stop.is_set() and len(added) < 20:
            added.append(create(gateway, project, headers, description="during")["id"])

    pool = ThreadPoolExecutor(1)
    creating = pool.submit(keep_creating)
    # Paging starts once creates are under way, so that the two overlap.
    wait_until(lambda: added or creating.done(), 30, "the first job created while paging")
    try:
        for params, order in (({"page_size": "5"}, "asc"), ({"page_size": "5", "sort_dir": "desc"}, "desc")):
            seen: list[int] = []
            token = None
            while True:
                query = {**params, **({"start_token": token} if token else {})}
                body = requests.get(project.url(gateway, "/livejobs"), params=query, headers=headers,
                                    timeout=10).json()
                assert body["success"], body
                seen.extend(row["id"] for row in body["result"])
                token = body["resultInfo"]["nextToken"]
                if not token:
                    break
            assert len(seen) == len(set(seen)), "a job came twice"
            assert set(existing) <= set(seen), "a job that existed before paging was skipped"
            if order == "asc":
                assert seen[:len(existing)] == existing
    finally:
        stop.set()
        pool.shutdown()
    creating.result()  # a create that failed fails the test
    assert added


def test_filters_sort_and_select(gateway: RunningGateway, project: Project, kube: client.ApiClient) -> None:
    headers = gateway.headers()
    jobs = [create(gateway, project, headers, description=f"job {i}", input={**CREATE["input"], "serverType": i % 2})
            for i in range(6)]
    url = project.url(gateway, "/livejobs")

    def ids(**params: str) -> list[int]:
        response = requests.get(url, params=params, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()["result"]]

    all_ids = [job["id"] for job in jobs]
    assert ids() == all_ids
    assert ids(server_type="SRT") == all_ids[1::2]
    assert ids(server_type="[RTMP,SRT]", id=f"ge:{all_ids[2]}") == all_ids[2:]
    assert ids(description="'job 3'") == [all_ids[3]]
    assert ids(sort="created_at", sort_dir="desc") == list(reversed(all_ids))
    # modified_at: change one job; it sorts last.
    requests.post(project.url(gateway, f"/livejobs/{jobs[0]['key']}"), json={"online": False}, headers=headers,
                  timeout=10).raise_for_status()
    assert ids(sort="modified_at")[-1] == all_ids[0]
    assert ids(online="false") == [all_ids[0]]
    body = requests.get(url, params={"select": "id,status", "pageSize": "2"}, headers=headers, timeout=10).json()
    assert [set(row) for row in body["result"]] == [{"id", "status"}] * 2
    detail = requests.get(f"{url}/{all_ids[0]}", params={"select": "name,input.serverType"}, headers=headers,
                          timeout=10).json()
    assert detail["result"] == {"name": jobs[0]["name"], "input": {"serverType": 0}}
    assert get_cr(kube, project.namespace, "livejobs", jobs[0]["name"])["spec"]["online"] is False


def test_start_stop_and_live_cut(gateway: RunningGateway, project: Project, kube: client.ApiClient) -> None:
    headers = gateway.headers()
    job = create(gateway, project, headers, recording=True)
    url = project.url(gateway, f"/livejobs/{job['key']}")
    response = requests.post(url, json={"online": False}, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    check_envelope(response.json())
    assert response.json()["result"]["online"] is False
    assert get_cr(kube, project.namespace, "livejobs", job["name"])["spec"]["online"] is False
    now = datetime.now(UTC)
    before = requests.post(url, headers=headers, timeout=10, json={
        "online": True, "startDateTime": (now - timedelta(minutes=10)).isoformat(),
        "finishDateTime": (now - timedelta(minutes=2)).isoformat()})
    assert before.status_code == 400, before.text  # the job did not exist yet: nothing to cut
    assert before.json()["errors"][0].startswith("finishDateTime: the live job was created at")
    response = requests.post(url, headers=headers, timeout=10, json={
        "online": True, "startDateTime": (now - timedelta(minutes=10)).isoformat(), "finishDateTime": now.isoformat()})
    assert response.status_code == 201, response.text
    clip = response.json()["result"]["recordJobName"]
    record = get_cr(kube, project.namespace, "recordjobs", clip)
    assert record["spec"]["source"] == {"liveJobRef": job["name"]}
    assert record["spec"]["output"]["path"] == f"live/news/clips/{clip}"
    assert record["metadata"]["labels"]["onair.dev/project-id"] == project.id
    got = requests.get(project.url(gateway, f"/recordjobs/{clip}"), headers=headers, timeout=10).json()
    assert got["result"]["streamInput"]["liveJobName"] == job["name"]
    bad = requests.post(url, headers=headers, timeout=10, json={
        "online": True, "startDateTime": now.isoformat(), "finishDateTime": (now - timedelta(minutes=1)).isoformat()})
    assert bad.status_code == 400 and bad.json()["errors"] == ["finishDateTime: must be after startDateTime"]
    # A cut that ends in the future is a clip too (its RecordJob waits for the stream); the channel
    # gets no schedule, so it does not stop at the cut's end.
    finish = now + timedelta(minutes=30)
    response = requests.post(url, headers=headers, timeout=10, json={
        "online": True, "startDateTime": (now - timedelta(minutes=1)).isoformat(),
        "finishDateTime": finish.isoformat()})
    assert response.status_code == 201, response.text
    waiting = get_cr(kube, project.namespace, "recordjobs", response.json()["result"]["recordJobName"])
    assert waiting["spec"]["source"] == {"liveJobRef": job["name"]}
    assert datetime.fromisoformat(waiting["spec"]["timeRange"]["end"].replace("Z", "+00:00")) == finish
    live = get_cr(kube, project.namespace, "livejobs", job["name"])
    assert "schedule" not in live["spec"] and live["spec"]["online"] is True
    got = requests.get(project.url(gateway, f"/livejobs/{job['name']}"), headers=headers, timeout=10).json()
    assert got["result"]["endDateTime"] is None
    lone = requests.post(url, headers=headers, timeout=10, json={"online": True, "finishDateTime": finish.isoformat()})
    assert lone.status_code == 400, lone.text
    check_envelope(lone.json(), success=False)
    assert lone.json()["errors"][0].startswith("startDateTime: required with finishDateTime")
    # A job that does not record keeps only its live window: a cut that the window will not hold when
    # the clip is cut is refused, and nothing is made or switched.
    brief = create(gateway, project, headers)
    refused = requests.post(project.url(gateway, f"/livejobs/{brief['key']}"), headers=headers, timeout=10, json={
        "online": False, "startDateTime": now.isoformat(), "finishDateTime": finish.isoformat()})
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0].startswith("startDateTime: the live job does not record"), refused.text
    assert get_cr(kube, project.namespace, "livejobs", brief["name"])["spec"]["online"] is True
    records = custom(kube).list_namespaced_custom_object("onair.dev", "v1alpha1", project.namespace, "recordjobs")
    assert not [record for record in records["items"] if record["spec"]["source"].get("liveJobRef") == brief["name"]]


def test_record_jobs(gateway: RunningGateway, project: Project, kube: client.ApiClient) -> None:
    headers = gateway.headers()
    url = project.url(gateway, "/recordjobs")
    made = []
    for index in range(3):
        response = requests.post(url, headers=headers, timeout=10, json={
            "name": f"record {index}", "source": {"streamUrl": "rtmp://origin.example.com/live/s1"},
            "output": {"type": "oss", "bucket": "imsbucket1", "endpoint": "https://oss.example.com"},
            "notifyUrl": "https://example.com/imsnotify", "jobTemplateId": 7})
        assert response.status_code == 201, response.text
        made.append(response.json()["result"])
        schemas.RecordJobOut.model_validate(made[-1])
    assert made[0]["templateName"] == "gateway test ladder"
    listed = requests.get(url, headers=headers, timeout=10).json()
    assert [r["jobId"] for r in listed["result"]] == [m["jobId"] for m in reversed(made)]
    assert listed["resultInfo"]["totalCount"] == 3
    today = datetime.now(UTC)
    window = {"StartTime": (today - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "EndTime": (today + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    body = requests.get(url, params={**window, "SortBy": "asc", "PageSize": "2", "PageNo": "1",
                                     "Keyword": "record"}, headers=headers, timeout=10).json()
    assert [r["name"] for r in body["result"]] == ["record 0", "record 1"]
    assert requests.get(url, params={"Keyword": made[1]["jobId"]}, headers=headers,
                        timeout=10).json()["resultInfo"]["totalCount"] == 1
    old = {"StartTime": "2020-01-01T00:00:00Z", "EndTime": "2020-01-30T00:00:00Z"}
    assert requests.get(url, params=old, headers=headers, timeout=10).json()["result"] == []
    too_long = requests.get(url, params={"StartTime": "2020-01-01T00:00:00Z", "EndTime": "2020-03-01T00:00:00Z"},
                            headers=headers, timeout=10)
    assert too_long.status_code == 400 and too_long.json()["errors"][0].startswith("EndTime: at most 30 days")
    first = made[0]["id"]
    paused = requests.post(f"{url}/{first}/pause", headers=headers, timeout=10).json()["result"]
    assert paused["paused"] is True
    assert get_cr(kube, project.namespace, "recordjobs", made[0]["jobId"])["spec"]["paused"] is True
    # No waiting: the just-paused job is found by Status=paused at once, and only it.
    just_paused = requests.get(url, params={"Status": "paused"}, headers=headers, timeout=10).json()["result"]
    assert [(r["jobId"], r["status"]) for r in just_paused] == [(made[0]["jobId"], "paused")]
    both = requests.get(url, params={"Keyword": "record", "search": "record 2"}, headers=headers, timeout=10).json()
    assert [r["name"] for r in both["result"]] == ["record 2"]
    assert requests.post(f"{url}/{first}/resume", headers=headers, timeout=10).json()["result"]["paused"] is False
    stopped = requests.post(f"{url}/{first}/stop", headers=headers, timeout=10)
    assert stopped.status_code == 200, stopped.text
    assert get_cr(kube, project.namespace, "recordjobs", made[0]["jobId"])["spec"]["timeRange"]["end"]
    bad = requests.post(url, headers=headers, timeout=10, json={"source": {"streamUrl": "ftp://x"},
                                                                 "output": {"bucket": "media"}})
    assert bad.status_code == 400 and bad.json()["errors"][0].startswith("source.streamUrl: ")


def test_auth_matrix(gateway: RunningGateway, project: Project, kube: client.ApiClient, namespace: str) -> None:
    url = project.url(gateway, "/livejobs")
    import jwt
    expired = jwt.encode({"iss": "onair-gateway", "aud": "onair", "sub": "writer", "iat": 1, "exp": 2,
                          "projects": ["*"], "role": "write"}, "cluster-test-signing-key-0123456789abcdef",
                         algorithm="HS256")
    forged = jwt.encode({"iss": "onair-gateway", "aud": "onair", "sub": "x", "iat": 1, "exp": 2**33,
                         "projects": ["*"], "role": "admin"}, "not-the-gateway-signing-key-0123456789",
                        algorithm="HS256")
    cases = [
        ("no token", {}, "GET", url, 401),
        ("garbage token", {"Authorization": "Bearer abc.def.ghi"}, "GET", url, 401),
        ("forged token", {"Authorization": f"Bearer {forged}"}, "GET", url, 401),
        ("expired token", {"Authorization": f"Bearer {expired}"}, "GET", url, 401),
        ("basic auth", {"Authorization": "Basic dXNlcjpwYXNz"}, "GET", url, 401),
        ("another project", gateway.headers("pinned"), "GET", url, 403),
        ("read-only writing", gateway.headers("read"), "POST", url, 403),
        ("read-only reading", gateway.headers("read"), "GET", url, 200),
        ("writer on operations", gateway.headers("write"), "GET", f"{gateway.base}/api/v1/streamers", 403),
        ("admin on operations", gateway.headers("admin"), "GET", f"{gateway.base}/api/v1/streamers", 200),
    ]
    for what, headers, method, target, status in cases:
        response = requests.request(method, target, headers=headers, json=CREATE, timeout=10)
        assert response.status_code == status, (what, response.text)
        check_envelope(response.json(), success=status < 400)
    assert requests.post(f"{gateway.base}/api/v1/login", json={"apiKey": "wrong"}, timeout=10).status_code == 401
    # The pinned key works on its own project.
    pinned = make_pinned(kube, namespace, gateway)
    assert requests.get(pinned.url(gateway, "/livejobs"), headers=gateway.headers("pinned"),
                        timeout=10).status_code == 200


def make_pinned(kube: client.ApiClient, namespace: str, gateway: RunningGateway) -> Project:
    body: Any = {"metadata": {"name": f"{namespace}-pin", "labels": {"onair.dev/test": "true"}}}
    client.CoreV1Api(kube).create_namespace(body)
    return make_project(kube, f"{namespace}-pin", gateway, PINNED_PROJECT)


def test_bad_input_is_400_never_500(gateway: RunningGateway, project: Project) -> None:
    headers = gateway.headers()
    url = project.url(gateway, "/livejobs")
    cases = [
        ("post", url, {"json": {**CREATE, "unknown": 1}}, 400, "unknown: Extra inputs are not permitted"),
        ("post", url, {"json": {**CREATE, "jobTemplateId": "7"}}, 400,
         "jobTemplateId: Input should be a valid integer"),
        ("post", url, {"json": {**CREATE, "jobTemplateId": 99}}, 400, "jobTemplateId: no JobTemplate with id 99"),
        ("post", url, {"data": b"{" * 10}, 400, "body: not valid JSON"),
        ("post", url, {"data": b"[" + b"1," * 100_000 + b"1]"}, 413, "request body too large"),
        ("get", url.replace(project.id, "not-a-guid"), {}, 400, "projectId: must be a GUID"),
        ("get", url, {"params": {"pageSize": "5000"}}, 400, "pageSize: must be an integer from 1 to 1000"),
        ("get", url, {"params": {"page_size": "0"}}, 400, "page_size: must be an integer from 1 to 1000"),
        ("get", url, {"params": {"created_at": "gt:yesterday"}}, 400, "created_at: expected Unix milliseconds"),
        ("get", url, {"params": {"start_token": "Zm9v"}}, 400, "start_token: not a token this API gave out"),
        ("get", f"{url}/12345", {}, 404, "id: live job 12345 not found"),
        ("get", url.replace(project.id, str(uuid.uuid4())), {}, 404, "projectId: project"),
    ]
    for method, target, kwargs, status, prefix in cases:
        response = requests.request(method, target, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (prefix, response.text)
        body = response.json()
        check_envelope(body, success=False)
        assert body["errors"][0].startswith(prefix), body["errors"]


def test_templates_operations_and_metrics(gateway: RunningGateway, project: Project) -> None:
    headers = gateway.headers("admin")
    templates = requests.get(project.url(gateway, "/jobtemplates"), headers=headers, timeout=10).json()
    assert [(t["id"], t["name"], t["shared"]) for t in templates["result"]] == [(7, "gateway test ladder", False)]
    one = requests.get(project.url(gateway, "/jobtemplates/7"), headers=headers, timeout=10).json()
    assert one["result"]["renditions"][0]["name"] == "360p"
    streamers = requests.get(f"{gateway.base}/api/v1/streamers", headers=headers, timeout=10).json()
    nodes = [s for s in streamers["result"]["streamers"] if s["role"] == "node"]
    assert nodes and all("ready" in node["stats"] for node in nodes)
    health = requests.get(f"{gateway.base}/api/v1/health", headers=headers, timeout=10).json()
    assert health["result"]["ready"] is True and health["result"]["streamer_metrics_total"]["total"] == len(nodes)
    text = requests.get(f"{gateway.base}/api/v1/health", params={"format": "openmetrics"}, headers=headers,
                        timeout=10)
    assert text.headers["Content-Type"].startswith("application/openmetrics-text")
    assert text.text.rstrip().endswith("# EOF")
    metrics = requests.get(f"{gateway.base}/metrics", timeout=10).text
    assert "onair_gateway_requests_total" in metrics and 'onair_gateway_cache_synced{cache="livejobs"} 1.0' in metrics
    preflight = requests.options(project.url(gateway, "/livejobs"), timeout=10, headers={
        "Origin": "https://console.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://console.example.com"


def test_templates_outputs_and_stats_speak_the_list_query_language(gateway: RunningGateway, project: Project,
                                                                   kube: client.ApiClient) -> None:
    """Filters ([a,b], op:value, quotes), sort, select= and keyset paging on the smaller lists too, over
    what the API server holds; a bad parameter is a 400 naming it."""
    for name, template_id in (("gw-hd", 3), ("gw-audio", 12)):
        custom(kube).create_namespaced_custom_object("onair.dev", "v1alpha1", project.namespace, "jobtemplates", {
            "apiVersion": "onair.dev/v1alpha1", "kind": "JobTemplate", "metadata": {"name": name},
            "spec": {"id": template_id, "name": name, "renditions": [
                {"name": "360p", "width": 640, "height": 360, "fps": 30, "videoBitrate": 800000}]}})
    headers = gateway.headers("read")
    templates_url = project.url(gateway, "/jobtemplates")

    def template_ids(**params: str) -> list[int]:
        response = requests.get(templates_url, params=params, headers=headers, timeout=5)
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["result"]]

    wait_until(lambda: len(template_ids()) == 3, 15, "the gateway to see the new templates")
    assert template_ids() == [7, 3, 12]  # the default first, then by id
    assert template_ids(sort="id", sort_dir="desc") == [12, 7, 3]
    assert template_ids(id="[3,12]", default="false") == [3, 12]
    assert template_ids(name="'gw-hd'") == [3]
    assert template_ids(id="ge:7") == [7, 12]
    pages, token = [], None
    while True:
        body = requests.get(templates_url, params={"page_size": "2", "select": "id",
                                                   **({"start_token": token} if token else {})},
                            headers=headers, timeout=5).json()
        pages.append(body["result"])
        token = body["resultInfo"]["nextToken"]
        if not token:
            break
    assert pages == [[{"id": 7}, {"id": 3}], [{"id": 12}]]

    name = "outputs-by-kubectl"
    custom(kube).create_namespaced_custom_object("onair.dev", "v1alpha1", project.namespace, "livejobs", {
        "apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob", "metadata": {"name": name},
        "spec": {"jobTemplateId": 7, "input": {"serverType": "RTMP"}, "destination": {"bucket": "media"}}})
    job = wait_until(lambda: requests.get(project.url(gateway, f"/livejobs/{name}"), headers=headers, timeout=5)
                     .json()["result"], 15, "the gateway to see the kubectl-made job")
    stats = requests.get(project.url(gateway, f"/livejobs/{name}/stats"), headers=headers, timeout=5).json()
    assert stats["result"] == [STATISTICS_NULL]  # no media yet: the documented row, every value null
    custom(kube).patch_namespaced_custom_object_status("onair.dev", "v1alpha1", project.namespace, "livejobs", name, {
        "status": {"phase": "Live", "outputs": [{"name": "1080p", "status": "Running", "segmentsWritten": 9},
                                                {"name": "720p", "status": "Stalled", "segmentsWritten": 4},
                                                {"name": "480p", "status": "Pending"}]}})
    outputs_url = project.url(gateway, "/livejobs/outputs")
    wait_until(lambda: requests.get(outputs_url, headers=headers, timeout=5).json()["resultInfo"]["totalCount"] == 3,
               15, "the outputs to reach the gateway")

    def outputs(**params: str) -> list[Any]:
        response = requests.get(outputs_url, params=params, headers=headers, timeout=5)
        assert response.status_code == 200, response.text
        return list(response.json()["result"])

    assert [o["name"] for o in outputs(status="[Stalled,Pending]")] == ["720p", "480p"]
    assert [o["name"] for o in outputs(counter="gt:4", jobId=str(job["id"]))] == ["1080p"]
    assert outputs(rendition="'720p'", select="outputId,statusText") == [{"outputId": 2, "statusText": "Stalled"}]
    first = requests.get(outputs_url, params={"page_size": "2"}, headers=headers, timeout=5).json()
    rest = requests.get(outputs_url, params={"page_size": "2", "start_token": first["resultInfo"]["nextToken"]},
                        headers=headers, timeout=5).json()
    assert [o["outputId"] for o in first["result"] + rest["result"]] == [1, 2, 3]
    assert rest["resultInfo"]["nextToken"] is None
    for target, params, prefix in ((outputs_url, {"status": "Broken"}, "status: must be one of"),
                                   (outputs_url, {"select": "nope"}, "select: unknown field"),
                                   (templates_url, {"sort": "name"}, "sort: must be"),
                                   (templates_url, {"id": "gt:x"}, "id: expected an integer"),
                                   (project.url(gateway, f"/livejobs/{name}/timings"), {"sort": "modified_at"},
                                    "sort: must be created_at")):
        response = requests.get(target, params=params, headers=headers, timeout=5)
        assert response.status_code == 400, response.text
        check_envelope(response.json(), success=False)
        assert response.json()["errors"][0].startswith(prefix), response.json()["errors"]

from onair.operator import naming


def test_fnv32a_matches_the_reference_vectors() -> None:
    assert naming.fnv32a("") == 0x811C9DC5
    assert naming.fnv32a("a") == 0xE40C292C
    assert naming.fnv32a("foobar") == 0xBF9CF968


def test_pod_name_is_deterministic_per_attempt() -> None:
    first = naming.pod_name("news", "encoder", "uid-1", 1)
    assert first == naming.pod_name("news", "encoder", "uid-1", 1)
    assert first.startswith("news-encoder-")
    assert naming.pod_name("news", "encoder", "uid-1", 2) != first
    assert naming.pod_name("news", "encoder", "uid-2", 1) != first


def test_long_names_fit_a_dns_label_and_stay_distinct() -> None:
    long = "x" * 250
    a = naming.pod_name(long, "encoder", "uid-1", 1)
    b = naming.pod_name(long, "encoder", "uid-1", 2)
    assert len(a) <= 63 and len(b) <= 63
    assert a != b


def test_service_name_starts_with_a_letter_for_guid_job_names() -> None:
    name = naming.service_name("3fa85f64-5717-4562-b3fc-2c963f66afa6", "uid")
    assert name[0].isalpha() and len(name) <= 63


def test_secret_names_carry_the_job_uid_and_fit_a_subdomain() -> None:
    assert naming.stream_key_secret_name("news", "uid-1") == f"news-stream-key-{naming.fnv32a('uid-1')}"
    assert naming.stream_key_secret_name("news", "uid-1") != naming.stream_key_secret_name("news", "uid-2")
    assert naming.control_key_secret_name("rec", "uid-1") == f"rec-control-key-{naming.fnv32a('uid-1')}"
    long = naming.stream_key_secret_name("x" * 253, "uid-1")
    assert len(long) <= 253 and long.endswith(str(naming.fnv32a("uid-1")))

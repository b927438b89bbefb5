from onair.namespaces import listed_namespaces, watches


def test_namespace_patterns_are_listed_cluster_wide() -> None:
    assert listed_namespaces([]) == [None]
    assert listed_namespaces(["news", "sport", "news"]) == ["news", "sport"]
    assert listed_namespaces(["news", "t-*"]) == [None] and listed_namespaces(["!kube-system"]) == [None]
    assert listed_namespaces(["news, sport"]) == [None]  # one entry of two parts: kopf's pattern, not a name


def test_the_served_namespaces_are_the_ones_kopf_gives_the_operator() -> None:
    assert watches([], "anything")
    assert watches(["news", "onair-system"], "news") and not watches(["news", "onair-system"], "sport")
    assert watches(["t-*", "onair-system"], "t-1") and not watches(["t-*", "onair-system"], "prod-x")
    assert watches(["!kube-*"], "news") and not watches(["!kube-*"], "kube-system")
    # Parts of one entry, left to right: the first inclusion matches, an exclusion un-matches, a later
    # inclusion re-matches only what the first one matched.
    entry = "myapp-*, !*-pr-*, *pr-123"
    assert watches([entry], "myapp-live") and watches([entry], "myapp-pr-123")
    assert not watches([entry], "myapp-pr-456") and not watches([entry], "otherapp-pr-123")

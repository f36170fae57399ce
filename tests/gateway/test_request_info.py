"""The verb and resource of a request, read as the API server's RequestInfoFactory reads them."""

from __future__ import annotations

import pytest

from gateway.request_info import (
    REMEMBERED_TARGET_LENGTH,
    REMEMBERED_TARGETS,
    RequestInfo,
    _remembered,
    request_info,
)


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("GET", "/api/v1/namespaces/default/pods", RequestInfo("list", "pods", "", "default")),
        (
            "GET",
            "/api/v1/namespaces/default/pods?watch=true&resourceVersion=5",
            RequestInfo("watch", "pods", "", "default"),
        ),
        ("GET", "/api/v1/pods?watch=1", RequestInfo("watch", "pods")),
        ("GET", "/api/v1/pods?watch=false", RequestInfo("list", "pods")),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0",
            RequestInfo("get", "pods", "", "default", "web-0"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0/log?follow=true",
            RequestInfo("get", "pods", "log", "default", "web-0"),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web-0/exec?command=ls",
            RequestInfo("create", "pods", "exec", "default", "web-0"),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            RequestInfo("create", "configmaps", "", "default"),
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/shop/deployments/web/scale",
            RequestInfo("update", "deployments", "scale", "shop", "web", "apps", "v1"),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/web",
            RequestInfo("patch", "deployments", "", "shop", "web", "apps", "v1"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/configmaps/settings",
            RequestInfo("delete", "configmaps", "", "default", "settings"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/configmaps?labelSelector=a%3Db",
            RequestInfo("deletecollection", "configmaps", "", "default"),
        ),
        # A namespace is a resource named like itself, in itself (as the API server says).
        ("GET", "/api/v1/namespaces", RequestInfo("list", "namespaces")),
        (
            "GET",
            "/api/v1/namespaces/kube-system",
            RequestInfo("get", "namespaces", "", "kube-system", "kube-system"),
        ),
        (
            "PUT",
            "/api/v1/namespaces/old/finalize",
            RequestInfo("update", "namespaces", "finalize", "old", "old"),
        ),
        (
            "GET",
            "/apis/apps/v1/deployments",
            RequestInfo("list", "deployments", api_group="apps", api_version="v1"),
        ),
        # The deprecated /watch/ paths and /proxy/: the path says the verb.
        (
            "GET",
            "/api/v1/watch/namespaces/default/pods",
            RequestInfo("watch", "pods", "", "default"),
        ),
        (
            "GET",
            "/api/v1/proxy/namespaces/default/services/web/healthz",
            RequestInfo("proxy", "services", "", "default", "web"),
        ),
        ("HEAD", "/api/v1/nodes/n1", RequestInfo("get", "nodes", "", "", "n1")),
        # Discovery and non-resource paths: the method, no resource.
        ("GET", "/api", RequestInfo("get")),
        ("GET", "/api/v1", RequestInfo("get", api_version="v1")),
        ("GET", "/apis", RequestInfo("get")),
        ("GET", "/apis/apps", RequestInfo("get")),
        ("GET", "/apis/apps/v1", RequestInfo("get", api_group="apps", api_version="v1")),
        ("GET", "/version", RequestInfo("get")),
        ("GET", "/openapi/v2?timeout=32s", RequestInfo("get")),
        ("POST", "/", RequestInfo("post")),
    ],
)
def test_verb_and_resource(method: str, target: str, expected: RequestInfo) -> None:
    info = request_info(method, target)
    assert (info.verb, info.resource, info.subresource, info.namespace, info.name) == (
        expected.verb,
        expected.resource,
        expected.subresource,
        expected.namespace,
        expected.name,
    )
    if expected.api_group:
        assert (info.api_group, info.api_version) == (expected.api_group, expected.api_version)


def test_group_and_version() -> None:
    assert request_info("GET", "/api/v1/pods") == RequestInfo("list", "pods", api_version="v1")
    info = request_info("GET", "/apis/batch/v1/namespaces/n/jobs/j")
    assert (info.api_group, info.api_version) == ("batch", "v1")


def test_escaped_segments_are_read_unescaped() -> None:
    info = request_info("GET", "/api/v1/namespaces/a/configmaps/b%2Ec")
    assert info.name == "b.c"
    assert info.is_resource_request
    assert not request_info("GET", "/version").is_resource_request


def test_a_long_target_is_read_as_a_short_one_is_but_not_kept() -> None:
    long_name = "n" * REMEMBERED_TARGET_LENGTH
    before = _remembered.cache_info().currsize
    info = request_info("GET", f"/api/v1/namespaces/a/configmaps/{long_name}")
    assert (info.verb, info.name) == ("get", long_name)
    assert _remembered.cache_info().currsize == before


def test_what_is_kept_has_a_bound() -> None:
    assert _remembered.cache_info().maxsize == REMEMBERED_TARGETS
    for index in range(REMEMBERED_TARGETS + 10):
        assert request_info("GET", f"/api/v1/namespaces/a/pods/p{index}").name == f"p{index}"
    assert _remembered.cache_info().currsize == REMEMBERED_TARGETS

"""Every service validates what it accepts, with the shared rules: a caller
may skip the gateway, ingestion and the decider and call the store, the SRN
adapter or the postback dispatcher directly. Bad values (a path and markup
as an id, a GAID that is no UUID, an IP that is none, a file:// postback, a
click window of 1e9 s, lookups of 10,000 keys) are refused with
INVALID_ARGUMENT naming the field, and nothing of the request is stored."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as postback_pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as postback_grpc
from lookback.api.srn.v1 import srn_adapter_service_pb2 as srn_pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as srn_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import app_pb2, decision_pb2, install_pb2, postback_pb2, touch_pb2
from lookback.testing.builders import app, click, install, new_app_id, new_gaid
from lookback.testing.rpc import expect_invalid
from lookback.testing.srn import FakeSrn

BAD_ID = "../../etc/passwd\n<x>"
BAD_GAID = "not-a-uuid"
BAD_IP = "999.1.1.1"
FILE_URL = "file:///etc/passwd"
HUGE = duration_pb2.Duration(seconds=10**9)
MANY = [f"sha1:gaid:{i:040x}" for i in range(10_000)]


def indexed(touch: touch_pb2.Touch) -> store_pb.IndexedTouch:
    if not touch.click_id:
        touch.click_id = f"c-{uuid.uuid4().hex}"
    return store_pb.IndexedTouch(touch=touch, match_keys=["sha1:gaid:" + "0" * 39 + "1"])


def record(app_id: str, install_id: str, **fields: object) -> store_pb.InstallRecord:
    built = install(app_id, install_id, gaid=new_gaid(), **fields)
    built.installed_at.FromSeconds(int(time.time()) - 60)
    decision = decision_pb2.Decision(
        decision_id=uuid.uuid4().hex,
        app_id=app_id,
        install_id=install_id,
        kind=decision_pb2.DECISION_KIND_INSTALL,
        media_source="organic",
    )
    return store_pb.InstallRecord(install=built, decision=decision)


async def not_found(call: Awaitable[Any]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# --- the touchpoint store -----------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"click_id": BAD_ID}, "touches[1].touch.click_id"),
        ({"app_id": BAD_ID}, "touches[1].touch.app_id"),
        ({"gaid": BAD_GAID}, "touches[1].touch.device.gaid"),
        ({"ip": BAD_IP}, "touches[1].touch.ip"),
        ({"click_lookback": HUGE}, "touches[1].touch.click_lookback"),
    ],
)
async def test_store_put_touches_refuses_a_bad_touch_and_stores_none_of_the_batch(
    app_id: str, store: store_grpc.TouchpointStoreServiceStub, bad: dict[str, object], field: str
) -> None:
    fields = dict(bad)
    good = indexed(click(app_id, new_gaid()))
    touch = click(str(fields.pop("app_id", app_id)), str(fields.pop("gaid", new_gaid())))
    for name, value in fields.items():
        if name == "click_lookback":
            touch.click_lookback.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(touch, name, value)
    await expect_invalid(
        store.PutTouches(store_pb.PutTouchesRequest(touches=[good, indexed(touch)])), field
    )
    found = await store.FindTouches(
        store_pb.FindTouchesRequest(app_id=app_id, click_ids=[good.touch.click_id])
    )
    assert list(found.touches) == []


async def test_store_put_touches_bounds_the_batch_and_the_keys(
    app_id: str, store: store_grpc.TouchpointStoreServiceStub
) -> None:
    many_keys = indexed(click(app_id, new_gaid()))
    many_keys.match_keys[:] = MANY
    await expect_invalid(
        store.PutTouches(store_pb.PutTouchesRequest(touches=[many_keys])),
        "touches[0].match_keys",
    )
    without_click_id = store_pb.IndexedTouch(touch=click(app_id, new_gaid()))
    await expect_invalid(
        store.PutTouches(store_pb.PutTouchesRequest(touches=[without_click_id])),
        "touches[0].touch.click_id",
    )
    batch = [indexed(click(app_id, new_gaid())) for _ in range(1001)]
    await expect_invalid(store.PutTouches(store_pb.PutTouchesRequest(touches=batch)), "touches")
    found = await store.FindTouches(
        store_pb.FindTouchesRequest(app_id=app_id, click_ids=[batch[0].touch.click_id])
    )
    assert list(found.touches) == []


async def test_store_lookups_are_bounded_and_their_ids_checked(
    app_id: str, store: store_grpc.TouchpointStoreServiceStub
) -> None:
    await expect_invalid(
        store.FindTouches(store_pb.FindTouchesRequest(app_id=app_id, match_keys=MANY)),
        "match_keys",
    )
    await expect_invalid(
        store.FindTouches(
            store_pb.FindTouchesRequest(app_id=app_id, click_ids=[f"c{i}" for i in range(10_000)])
        ),
        "click_ids",
    )
    await expect_invalid(
        store.FindTouches(store_pb.FindTouchesRequest(app_id=app_id, click_ids=[BAD_ID])),
        "click_ids[0]",
    )
    await expect_invalid(
        store.FindTouches(store_pb.FindTouchesRequest(app_id=BAD_ID, click_ids=["c1"])), "app_id"
    )
    await expect_invalid(
        store.GatherInstallFacts(
            store_pb.GatherInstallFactsRequest(app_id=app_id, install_id=BAD_ID)
        ),
        "install_id",
    )
    await expect_invalid(
        store.GatherInstallFacts(
            store_pb.GatherInstallFactsRequest(app_id=app_id, install_id="i1", touch_keys=MANY)
        ),
        "touch_keys",
    )
    await expect_invalid(
        store.GatherInstallFacts(
            store_pb.GatherInstallFactsRequest(app_id=app_id, install_id="i1", device_keys=MANY)
        ),
        "device_keys",
    )
    await expect_invalid(
        store.GetInstallRecord(store_pb.GetInstallRecordRequest(app_id=app_id, install_id=BAD_ID)),
        "install_id",
    )
    await expect_invalid(store.GetApp(store_pb.GetAppRequest(app_id=BAD_ID)), "app_id")


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"install_id": BAD_ID}, "record.install.install_id"),
        ({"ip": BAD_IP}, "record.install.ip"),
        ({"gaid": BAD_GAID}, "record.install.device.gaid"),
        ({"decision_id": ""}, "record.decision.decision_id"),
        ({"match_keys": MANY}, "record.match_keys"),
    ],
)
async def test_store_create_install_record_refuses_bad_records(
    app_id: str, store: store_grpc.TouchpointStoreServiceStub, bad: dict[str, object], field: str
) -> None:
    install_id = f"i-{uuid.uuid4().hex[:8]}"
    r = record(app_id, install_id)
    if "install_id" in bad:
        r.install.install_id = BAD_ID
    if "ip" in bad:
        r.install.ip = BAD_IP
    if "gaid" in bad:
        r.install.device.gaid = BAD_GAID
    if "decision_id" in bad:
        r.decision.decision_id = ""
    if "match_keys" in bad:
        r.match_keys[:] = MANY
    await expect_invalid(
        store.CreateInstallRecord(store_pb.CreateInstallRecordRequest(record=r)), field
    )
    await not_found(
        store.GetInstallRecord(
            store_pb.GetInstallRecordRequest(app_id=app_id, install_id=install_id)
        )
    )


async def test_store_exchange_refuses_bad_items_alone_and_bounds_the_batch(
    app_id: str, store: store_grpc.TouchpointStoreServiceStub
) -> None:
    good_id, bad_id = f"i-{uuid.uuid4().hex[:8]}", f"i-{uuid.uuid4().hex[:8]}"
    bad = record(app_id, bad_id)
    bad.install.device.gaid = BAD_GAID
    answer = await store.ExchangeDecisionWork(
        store_pb.ExchangeDecisionWorkRequest(
            gathers=[
                store_pb.GatherInstallFactsRequest(app_id=app_id, install_id=BAD_ID),
                store_pb.GatherInstallFactsRequest(app_id=app_id, install_id=good_id),
            ],
            creates=[
                store_pb.CreateInstallRecordRequest(record=bad),
                store_pb.CreateInstallRecordRequest(record=record(app_id, good_id)),
            ],
        )
    )
    statuses = [(g.status.code, g.status.message) for g in answer.gathers]
    assert statuses[0][0] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "install_id" in statuses[0][1]
    assert statuses[1][0] == 0
    assert answer.creates[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "install.device.gaid" in answer.creates[0].status.message
    assert answer.creates[1].status.code == 0 and answer.creates[1].response.created
    await not_found(
        store.GetInstallRecord(store_pb.GetInstallRecordRequest(app_id=app_id, install_id=bad_id))
    )

    gathers = [
        store_pb.GatherInstallFactsRequest(app_id=app_id, install_id=f"i{i}") for i in range(1001)
    ]
    await expect_invalid(
        store.ExchangeDecisionWork(store_pb.ExchangeDecisionWorkRequest(gathers=gathers)),
        "gathers",
    )


async def test_store_open_decisions_and_events_are_checked_and_not_stored(
    app_id: str, store: store_grpc.TouchpointStoreServiceStub
) -> None:
    install_id = f"i-{uuid.uuid4().hex[:8]}"
    created = await store.CreateInstallRecord(
        store_pb.CreateInstallRecordRequest(record=record(app_id, install_id))
    )
    assert created.created

    open_ = install_pb2.Open(app_id=app_id, install_id=install_id, ip=BAD_IP)
    open_.opened_at.GetCurrentTime()
    reengagement = decision_pb2.Decision(
        decision_id=uuid.uuid4().hex,
        app_id=app_id,
        install_id=install_id,
        kind=decision_pb2.DECISION_KIND_REENGAGEMENT,
        media_source="networka",
    )
    await expect_invalid(
        store.RecordOpenDecision(
            store_pb.RecordOpenDecisionRequest(open=open_, decision=reengagement)
        ),
        "open.ip",
    )
    open_.ip = ""
    open_.device.gaid = BAD_GAID
    await expect_invalid(
        store.RecordOpenDecision(
            store_pb.RecordOpenDecisionRequest(open=open_, decision=reengagement)
        ),
        "open.device.gaid",
    )
    stored = await store.GetInstallRecord(
        store_pb.GetInstallRecordRequest(app_id=app_id, install_id=install_id)
    )
    assert not stored.record.HasField("latest_reengagement")

    event_id = f"e-{uuid.uuid4().hex[:8]}"
    event = install_pb2.InAppEvent(
        app_id=app_id, install_id=BAD_ID, event_id=event_id, name="purchase"
    )
    event.occurred_at.GetCurrentTime()
    attribution = decision_pb2.EventAttribution(event_id=event_id, media_source="organic")
    await expect_invalid(
        store.PutEvent(store_pb.PutEventRequest(event=event, attribution=attribution)),
        "event.install_id",
    )
    nameless = install_pb2.InAppEvent(app_id=app_id, install_id=install_id, name="purchase")
    await expect_invalid(
        store.PutEvent(store_pb.PutEventRequest(event=nameless, attribution=attribution)),
        "event.event_id",
    )
    event.install_id = install_id
    put = await store.PutEvent(store_pb.PutEventRequest(event=event, attribution=attribution))
    assert put.created  # the refused write stored nothing under this event id


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"postbacks": FILE_URL}, "app.settings.postbacks[networka].install.url"),
        ({"click_lookback": HUGE}, "app.settings.click_lookback"),
        ({"srn_networks": ["srn_x"] * 51}, "app.settings.srn_networks"),
    ],
)
async def test_store_create_and_replace_app_check_the_app(
    store: store_grpc.TouchpointStoreServiceStub, settings: dict[str, Any], field: str
) -> None:
    def bad_app(app_id: str) -> app_pb2.App:
        if "postbacks" in settings:
            return app(app_id, postbacks={"networka": FILE_URL})
        return app(app_id, **settings)

    app_id = new_app_id()
    await expect_invalid(store.CreateApp(store_pb.CreateAppRequest(app=bad_app(app_id))), field)
    await not_found(store.GetApp(store_pb.GetAppRequest(app_id=app_id)))

    good = app(app_id, postbacks={"networka": "https://93.184.216.34/pb?c={campaign}"})
    good.version = 1
    await store.CreateApp(store_pb.CreateAppRequest(app=good))
    replacement = bad_app(app_id)
    replacement.version = 2
    await expect_invalid(
        store.ReplaceApp(store_pb.ReplaceAppRequest(app=replacement, expected_version=1)), field
    )
    stored = (await store.GetApp(store_pb.GetAppRequest(app_id=app_id))).app
    assert stored == good


# --- the SRN adapter ----------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"app_id": BAD_ID}, "app_id"),
        ({"gaid": BAD_GAID}, "device.gaid"),
        ({"budget": HUGE}, "budget"),
        ({"budget": duration_pb2.Duration(seconds=-1)}, "budget"),
        ({"networks": ["srn_social"] * 10_000}, "networks"),
        ({"networks": [BAD_ID]}, "networks[0]"),
    ],
)
async def test_srn_adapter_checks_its_queries_and_asks_no_network(
    srn: srn_grpc.SrnAdapterServiceStub,
    fake_srn: tuple[FakeSrn, str],
    bad: dict[str, Any],
    field: str,
) -> None:
    fake, _ = fake_srn
    request = srn_pb.QueryClaimsRequest(app_id=str(bad.get("app_id", "com.test.srn")))
    request.networks[:] = bad.get("networks", ["srn_social"])
    request.device.gaid = str(bad.get("gaid", new_gaid()))
    request.installed_at.GetCurrentTime()
    if "budget" in bad:
        request.budget.CopyFrom(bad["budget"])
    asked = len(fake.queries)
    await expect_invalid(srn.QueryClaims(request), field)
    assert len(fake.queries) == asked


# --- the postback dispatcher --------------------------------------------------


async def test_postback_dispatcher_checks_jobs_ids_and_page_sizes(
    postback: postback_grpc.PostbackDispatcherServiceStub,
) -> None:
    job_id = f"j-{uuid.uuid4().hex}"

    def job(**fields: object) -> postback_pb2.PostbackJob:
        base: dict[str, object] = {
            "job_id": job_id,
            "app_id": "com.test.pb",
            "partner": "networka",
            "url": "https://partner.example/pb",
        }
        return postback_pb2.PostbackJob(**{**base, **fields})  # type: ignore[arg-type]

    for bad, field in (
        (job(url=FILE_URL), "jobs[0].url"),
        (job(partner=BAD_ID), "jobs[0].partner"),
        (job(app_id=BAD_ID), "jobs[0].app_id"),
        (job(job_id=BAD_ID), "jobs[0].job_id"),
        (job(url="https://partner.example/" + "x" * 5000), "jobs[0].url"),
    ):
        await expect_invalid(
            postback.EnqueuePostbacks(postback_pb.EnqueuePostbacksRequest(jobs=[bad])), field
        )
    many = [job(job_id=f"{job_id}-{i}") for i in range(1001)]
    await expect_invalid(
        postback.EnqueuePostbacks(postback_pb.EnqueuePostbacksRequest(jobs=many)), "jobs"
    )
    await not_found(postback.GetPostbackJob(postback_pb.GetPostbackJobRequest(job_id=job_id)))
    await not_found(
        postback.GetPostbackJob(postback_pb.GetPostbackJobRequest(job_id=f"{job_id}-0"))
    )

    await expect_invalid(
        postback.GetPostbackJob(postback_pb.GetPostbackJobRequest(job_id=BAD_ID)), "job_id"
    )
    await expect_invalid(
        postback.ReplayDeadLetter(postback_pb.ReplayDeadLetterRequest(job_id=BAD_ID)), "job_id"
    )
    await expect_invalid(
        postback.ListDeadLetters(postback_pb.ListDeadLettersRequest(page_size=5000)), "page_size"
    )


# --- the decider ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"install_id": BAD_ID}, "install.install_id"),
        ({"gaid": BAD_GAID}, "install.device.gaid"),
        ({"ip": BAD_IP}, "install.ip"),
    ],
)
async def test_decider_refuses_bad_installs_and_stores_nothing(
    app_id: str,
    decider: decider_grpc.DeciderServiceStub,
    store: store_grpc.TouchpointStoreServiceStub,
    bad: dict[str, str],
    field: str,
) -> None:
    install_id = f"i-{uuid.uuid4().hex[:8]}"
    report = install(app_id, install_id, gaid=bad.get("gaid", new_gaid()), ip=bad.get("ip", ""))
    if "install_id" in bad:
        report.install_id = BAD_ID
    await expect_invalid(
        decider.DecideInstall(decider_pb.DecideInstallRequest(install=report)), field
    )
    await not_found(
        store.GetInstallRecord(
            store_pb.GetInstallRecordRequest(app_id=app_id, install_id=install_id)
        )
    )


async def test_decider_refuses_bad_opens_and_events(
    app_id: str, decider: decider_grpc.DeciderServiceStub
) -> None:
    open_ = install_pb2.Open(app_id=app_id, install_id="i-1", ip=BAD_IP)
    await expect_invalid(decider.DecideOpen(decider_pb.DecideOpenRequest(open=open_)), "open.ip")
    event = install_pb2.InAppEvent(app_id=app_id, install_id=BAD_ID, name="purchase")
    await expect_invalid(
        decider.AttributeEvent(decider_pb.AttributeEventRequest(event=event)), "event.install_id"
    )


async def test_app_settings_check_ids_urls_and_windows(
    app_id: str, apps: apps_grpc.AppSettingsServiceStub
) -> None:
    fresh = new_app_id()
    await expect_invalid(
        apps.CreateApp(apps_pb.CreateAppRequest(app=app(fresh, postbacks={"networka": FILE_URL}))),
        "app.settings.postbacks[networka].install.url",
    )
    await not_found(apps.GetApp(apps_pb.GetAppRequest(app_id=fresh)))
    await expect_invalid(apps.GetApp(apps_pb.GetAppRequest(app_id=BAD_ID)), "app_id")

    before = (await apps.GetApp(apps_pb.GetAppRequest(app_id=app_id))).app
    update = app(app_id, click_lookback=HUGE)
    await expect_invalid(
        apps.UpdateApp(apps_pb.UpdateAppRequest(app=update)), "app.settings.click_lookback"
    )
    await expect_invalid(apps.UpdateApp(apps_pb.UpdateAppRequest(app=app(BAD_ID))), "app.app_id")
    after = (await apps.GetApp(apps_pb.GetAppRequest(app_id=app_id))).app
    assert after == before

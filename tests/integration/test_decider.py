"""The decider through the running suite: SRN claims under a deadline, the
settings cache, and exactly-once under concurrency."""

from __future__ import annotations

import time

from google.protobuf import field_mask_pb2

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.types.v1 import app_pb2, decision_pb2
from lookback.decider.cache import LruCache
from lookback.testing.builders import click, create_app, install, new_app_id, new_gaid
from lookback.testing.srn import FakeSrn


async def report(
    ingestion: ingestion_grpc.IngestionServiceStub, app_id: str, gaid: str
) -> decision_pb2.Decision:
    request = ingestion_pb.ReportInstallRequest(install=install(app_id, gaid=gaid))
    return (await ingestion.ReportInstall(request)).decision


async def test_srn_claim_wins_and_a_slow_srn_never_holds_the_decision(
    apps: apps_grpc.AppSettingsServiceStub,
    ingestion: ingestion_grpc.IngestionServiceStub,
    fake_srn: tuple[FakeSrn, str],
) -> None:
    fake, _ = fake_srn
    app_id = await create_app(
        apps, new_app_id("com.decider"), srn_networks=["srn_social", "srn_video"]
    )
    gaid = new_gaid()
    engaged_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    fake.claim("srn_social", app_id, {"gaid": gaid}, engaged_at, campaign="feed")
    fake.behaviour["srn_video"] = {"delay_ms": 3000}
    started = time.monotonic()
    d = await report(ingestion, app_id, gaid)
    elapsed = time.monotonic() - started
    assert (d.media_source, d.campaign, d.method) == (
        "srn_social",
        "feed",
        decision_pb2.ATTRIBUTION_METHOD_SRN,
    )
    assert list(d.unanswered_srns) == ["srn_video"]
    assert elapsed < 1.0, f"decision took {elapsed:.2f}s with a 100 ms SRN budget"
    fake.behaviour.pop("srn_video")


async def test_a_settings_change_is_seen_at_once_by_the_decider_that_served_it(
    apps: apps_grpc.AppSettingsServiceStub,
    ingestion: ingestion_grpc.IngestionServiceStub,
) -> None:
    app_id = await create_app(apps, new_app_id("com.decider"))
    before, after = new_gaid(), new_gaid()
    for gaid in (before, after):
        touch = click(app_id, gaid, ago=3 * 86400, click_id=f"c-{gaid[:8]}")
        await ingestion.RecordTouch(ingestion_pb.RecordTouchRequest(touch=touch))
    # 3 days is inside the default 7-day window; the settings are now cached.
    assert (await report(ingestion, app_id, before)).media_source == "networka"

    update = app_pb2.App(app_id=app_id)
    update.settings.click_lookback.FromSeconds(2 * 86400)
    answer = await apps.UpdateApp(
        apps_pb.UpdateAppRequest(
            app=update, update_mask=field_mask_pb2.FieldMask(paths=["settings.click_lookback"])
        )
    )
    assert answer.app.version == 2
    assert answer.app.settings.click_lookback.seconds == 2 * 86400
    # Outside the new 2-day window, at once, although the old settings were cached.
    assert (await report(ingestion, app_id, after)).media_source == "organic"


def test_the_lru_cache_is_bounded_in_size_and_age() -> None:
    now = [0.0]
    cache: LruCache[str, int] = LruCache(max_size=2, max_age=5.0, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # evicts the least recently used: b
    assert cache.get("b") is None
    now[0] = 5.0
    assert cache.get("a") == 1
    now[0] = 5.1
    assert cache.get("a") is None  # older than max_age: another replica's change is seen
    assert cache.hits == 2 and cache.misses == 2

"""The decider through the running suite: SRN claims under a deadline, the
settings cache, and exactly-once under concurrency."""

from __future__ import annotations

import time
import uuid

from google.protobuf import field_mask_pb2

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.types.v1 import app_pb2, decision_pb2, install_pb2, touch_pb2
from lookback.decider.cache import LruCache
from lookback.srn_adapter.fake import FakeSrn
from tests.conftest import new_gaid


async def make_app(apps: apps_grpc.AppSettingsServiceStub, **settings: object) -> str:
    app_id = f"com.decider.{uuid.uuid4().hex[:10]}"
    app = app_pb2.App(
        app_id=app_id, platform=app_pb2.PLATFORM_ANDROID, settings=app_pb2.AppSettings(**settings)
    )  # type: ignore[arg-type]
    await apps.CreateApp(apps_pb.CreateAppRequest(app=app))
    return app_id


async def install(
    ingestion: ingestion_grpc.IngestionServiceStub, app_id: str, gaid: str
) -> decision_pb2.Decision:
    i = install_pb2.Install(app_id=app_id, install_id=f"i-{uuid.uuid4().hex[:8]}")
    i.device.gaid = gaid
    return (await ingestion.ReportInstall(ingestion_pb.ReportInstallRequest(install=i))).decision


async def test_srn_claim_wins_and_a_slow_srn_never_holds_the_decision(
    apps: apps_grpc.AppSettingsServiceStub,
    ingestion: ingestion_grpc.IngestionServiceStub,
    fake_srn: tuple[FakeSrn, str],
) -> None:
    fake, _ = fake_srn
    app_id = await make_app(apps, srn_networks=["srn_social", "srn_video"])
    gaid = new_gaid()
    fake.claims.append(
        {
            "network": "srn_social",
            "app_id": app_id,
            "device": {"gaid": gaid},
            "touch_type": "click",
            "campaign": "feed",
            "engaged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600)),
        }
    )
    fake.behaviour["srn_video"] = {"delay_ms": 3000}
    started = time.monotonic()
    d = await install(ingestion, app_id, gaid)
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
    app_id = await make_app(apps)
    before, after = new_gaid(), new_gaid()
    for gaid in (before, after):
        touch = touch_pb2.Touch(
            app_id=app_id,
            type=touch_pb2.TOUCH_TYPE_CLICK,
            media_source="networka",
            click_id=f"c-{gaid[:8]}",
        )
        touch.device.gaid = gaid
        touch.engaged_at.FromSeconds(int(time.time()) - 3 * 86400)
        await ingestion.RecordTouch(ingestion_pb.RecordTouchRequest(touch=touch))
    # 3 days is inside the default 7-day window; the settings are now cached.
    assert (await install(ingestion, app_id, before)).media_source == "networka"

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
    assert (await install(ingestion, app_id, after)).media_source == "organic"


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

"""The outcomes log is the outbox: a decision answered OK while the
dispatcher was down still gets its postback, queued by the relay from the
log once the dispatcher is back, and a job the fast path already queued is
not sent twice."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.core.server import GrpcServer
from lookback.postback.component import PostbackComponent
from lookback.testing import builders
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.keys import admin_channel
from lookback.testing.receiver import PostbackSink
from lookback.testing.suite import EphemeralSuite


async def test_postbacks_of_decisions_made_while_the_dispatcher_was_down_are_sent(
    tmp_path: Path,
) -> None:
    relay = {"relay_settle": 0.2, "relay_interval": 0.1}
    suite = EphemeralSuite(tmp_path, outbound_allow_cidrs=LOCAL_CIDRS, postback_overrides=relay)
    a = await suite.start()
    async with PostbackSink() as sink:
        try:
            async with (
                admin_channel(a.ingestion) as ingestion_ch,
                admin_channel(a.decider) as decider_ch,
            ):
                app_id = await builders.create_app(
                    apps_grpc.AppSettingsServiceStub(decider_ch),
                    postbacks={"networka": f"{sink.url}/networka?click={{click_id}}"},
                )
                ingestion = ingestion_grpc.IngestionServiceStub(ingestion_ch)

                async def attributed_install(n: int) -> str:
                    gaid = builders.new_gaid()
                    touch = builders.click(app_id, gaid, ago=60, click_id=f"relay-{n}")
                    await ingestion.RecordTouches(
                        ingestion_pb.RecordTouchesRequest(touches=[touch])
                    )
                    answer = await ingestion.ReportInstall(
                        ingestion_pb.ReportInstallRequest(
                            install=builders.install(app_id, f"i-{n}", gaid=gaid)
                        )
                    )
                    assert answer.decision.media_source == "networka"
                    return answer.decision.decision_id

                # The fast path, with the dispatcher up.
                await attributed_install(0)
                await sink.wait_for("networka", count=1, timeout=10)

                # The dispatcher goes away; decisions are still answered OK.
                old = suite.servers["postback"]
                config = old.config
                await old.stop(grace=0.5)
                while_down = [await attributed_install(n) for n in (1, 2, 3)]

                # It comes back on the same address: the relay queues what the
                # decider could not hand over.
                same_port = dataclasses.replace(config, port=old.port)
                back = GrpcServer(PostbackComponent(same_port), same_port)
                await back.start()
                suite.servers["postback"] = back
                await sink.wait_for("networka", count=4, timeout=20)
                keys = [r.headers.get("Idempotency-Key", "") for r in sink.received]
                for decision_id in while_down:
                    assert f"{decision_id}:networka:install" in keys
                component = back.component
                assert isinstance(component, PostbackComponent)
                assert component.relay is not None and component.relay.new == 3
                # Nothing twice: the first decision's job was queued by the
                # fast path, and the relay's repeat of it was ignored.
                assert len(keys) == len(set(keys)) == 4
        finally:
            await suite.stop()

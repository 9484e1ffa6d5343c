"""``lookback.links.v1.LinkService``: an app's attribution links (docs/links.md),
served by the decider and kept by the store.

A link's code is 96 random bits (``secrets.token_urlsafe(12)``: 16
characters), so codes cannot be guessed or enumerated; it is public, in
``GET /l/{code}``. Links are never deleted: a disabled one still redirects
(to the web fallback) and records nothing, so a link already printed or
posted keeps landing people somewhere.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from lookback.api.links.v1 import link_service_pb2 as pb
from lookback.api.links.v1 import link_service_pb2_grpc as pb_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import link_pb2
from lookback.core import auth, convert
from lookback.core import validation as check
from lookback.core.clock import now_micros
from lookback.core.errors import AlreadyExists, NotFound, Violations

RULES = auth.rules_for(
    pb.DESCRIPTOR.services_by_name["LinkService"],
    CreateLink=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    GetLink=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    ListLinks=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    UpdateLink=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    DisableLink=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
)
"""An app's own backend (``s2s``) manages its links; the admin every app's."""

CODE_BYTES = 12
"""96 random bits per code."""
UPDATABLE = frozenset(
    {
        "media_source",
        "campaign",
        "adset",
        "ad",
        "site_id",
        "deep_link_value",
        "deep_link_params",
        "web_fallback_url",
        "disabled",
    }
)


def new_code() -> str:
    return secrets.token_urlsafe(CODE_BYTES)


def check_link(v: Violations, link: link_pb2.Link, prefix: str = "link.") -> None:
    check.check_media_source(v, link.media_source, f"{prefix}media_source")
    for name in ("campaign", "adset", "ad", "site_id"):
        if len(getattr(link, name)) > 500:
            v.add(f"{prefix}{name}", "must be at most 500 characters")
    check.check_deep_link(v, link.deep_link_value, link.deep_link_params, prefix)
    if link.web_fallback_url:
        check.check_web_url(v, link.web_fallback_url, f"{prefix}web_fallback_url")


@dataclass
class LinkServicer(pb_grpc.LinkServiceServicer):
    store: store_grpc.TouchpointStoreServiceStub

    async def _app_exists(self, app_id: str) -> None:
        await self.store.GetApp(store_pb.GetAppRequest(app_id=app_id))  # NOT_FOUND if not

    async def _get(self, app_id: str, code: str) -> link_pb2.Link:
        try:
            answer = await self.store.GetLink(store_pb.GetLinkRequest(code=code))
        except NotFound:
            answer = None
        # Another app's link is as unknown as none.
        if answer is None or answer.link.app_id != app_id:
            raise NotFound(f"app {app_id!r} has no link {code!r}")
        return answer.link

    async def CreateLink(
        self, request: pb.CreateLinkRequest, context: object
    ) -> pb.CreateLinkResponse:
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        check_link(v, request.link)
        v.raise_if_any()
        await self._app_exists(request.app_id)
        link = link_pb2.Link()
        link.CopyFrom(request.link)
        link.app_id = request.app_id
        link.create_time.CopyFrom(convert.micros_to_ts(now_micros()))
        link.update_time.CopyFrom(link.create_time)
        for _ in range(3):  # a taken code (never, at 96 bits) is drawn again
            link.code = new_code()
            try:
                await self.store.PutLink(store_pb.PutLinkRequest(link=link, create=True))
                return pb.CreateLinkResponse(link=link)
            except AlreadyExists:
                continue
        raise AlreadyExists("could not draw a free link code")

    async def GetLink(self, request: pb.GetLinkRequest, context: object) -> pb.GetLinkResponse:
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        check.check_id(v, request.code, "code")
        v.raise_if_any()
        return pb.GetLinkResponse(link=await self._get(request.app_id, request.code))

    async def ListLinks(
        self, request: pb.ListLinksRequest, context: object
    ) -> pb.ListLinksResponse:
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        check.check_page_size(v, request.page_size)
        if request.page_token:
            check.check_id(v, request.page_token, "page_token")
        v.raise_if_any()
        size = request.page_size or 100
        answer = await self.store.ListLinks(
            store_pb.ListLinksRequest(
                app_id=request.app_id, after_code=request.page_token, page_size=size
            )
        )
        links = list(answer.links)
        # A full page may be followed by an empty one (the store is not asked
        # for one more than a page).
        token = links[-1].code if len(links) == size else ""
        return pb.ListLinksResponse(links=links, next_page_token=token)

    async def UpdateLink(
        self, request: pb.UpdateLinkRequest, context: object
    ) -> pb.UpdateLinkResponse:
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        check.check_id(v, request.link.code, "link.code")
        paths = list(request.update_mask.paths)
        if not paths:
            v.add("update_mask", "name at least one field")
        for path in paths:
            if path not in UPDATABLE:
                v.add("update_mask", f"{path!r} cannot be changed (one of {sorted(UPDATABLE)})")
        v.raise_if_any()
        link = await self._get(request.app_id, request.link.code)
        for path in paths:
            if path == "deep_link_params":
                link.deep_link_params.clear()
                link.deep_link_params.update(request.link.deep_link_params)
            else:
                setattr(link, path, getattr(request.link, path))
        v = Violations()
        check_link(v, link)
        v.raise_if_any()
        return pb.UpdateLinkResponse(link=await self._replace(link))

    async def DisableLink(
        self, request: pb.DisableLinkRequest, context: object
    ) -> pb.DisableLinkResponse:
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        check.check_id(v, request.code, "code")
        v.raise_if_any()
        link = await self._get(request.app_id, request.code)
        link.disabled = True
        return pb.DisableLinkResponse(link=await self._replace(link))

    async def _replace(self, link: link_pb2.Link) -> link_pb2.Link:
        link.update_time.CopyFrom(convert.micros_to_ts(now_micros()))
        await self.store.PutLink(store_pb.PutLinkRequest(link=link, create=False))
        return link

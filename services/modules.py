"""Modules and targets: what a process builds for `--target all` or for one service.

Each module has a name, the modules it needs and an init function; a target is a set of
user-facing modules. Modules start in dependency order and stop in reverse. Peers are reached
through client modules (`text`, `images`): in-process objects when the peer's service runs in
this process, gRPC clients otherwise, so the ranker's code is the same in both modes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from services.config import Settings, Target
from services.security.peers import peer_security
from services.server import GrpcServer

if TYPE_CHECKING:
    from services.core.images import ImageEncoding, ImageSource
    from services.core.sentence_index import TextEncoder
    from services.core.text import TextEncoding
    from services.inference.models import ServedModels
    from services.store import VectorStore

log = logging.getLogger(__name__)
_T = TypeVar("_T")

INFERENCE: Final = "inference"
STORE: Final = "store"
TEXT: Final = "text"
IMAGES: Final = "images"
TEXT_ENCODER: Final = "text_encoder"
IMAGE_ENCODER: Final = "image_encoder"
RANKER: Final = "ranker"
ADMIN: Final = "admin"
ALL: Final = "all"
SEARCH: Final = "search"
GATEWAY: Final = "gateway"

TARGETS: dict[Target, tuple[str, ...]] = {
    ALL: (TEXT_ENCODER, IMAGE_ENCODER, RANKER, ADMIN, GATEWAY),
    # the store's single owner when it is embedded: ingestion and search in one process
    SEARCH: (IMAGE_ENCODER, RANKER, ADMIN),
    TEXT_ENCODER: (TEXT_ENCODER,),
    # the Admin service (upgrades) goes where the image writes are
    IMAGE_ENCODER: (IMAGE_ENCODER, ADMIN),
    RANKER: (RANKER,),
    # HTTP/JSON and the search page, over the gRPC API at gateway.upstream
    GATEWAY: (GATEWAY,),
}


@dataclass
class Module:
    name: str
    init: Callable[[App], Any]
    deps: tuple[str, ...] = ()
    stop: Callable[[Any], None] | None = None


@dataclass
class App:
    """A process: its settings, its gRPC server and the modules it started, with typed views
    of the components the modules share (`models`, `store`, `text`, `images`)."""

    settings: Settings
    server: GrpcServer
    components: dict[str, Any] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    @property
    def services(self) -> tuple[str, ...]:
        return TARGETS[self.settings.target]

    def hosts(self, service: str) -> bool:
        return service in self.services

    # typed views of the shared components, for the modules that depend on them
    @property
    def models(self) -> ServedModels:
        return cast("ServedModels", self._started(INFERENCE))

    @property
    def store(self) -> VectorStore:
        return cast("VectorStore", self._started(STORE))

    @property
    def text(self) -> TextEncoder:
        return cast("TextEncoder", self._started(TEXT))

    @property
    def images(self) -> ImageSource:
        return cast("ImageSource", self._started(IMAGES))

    @property
    def text_encoding(self) -> TextEncoding:
        """The in-process text side: what a process hosting the TextEncoder has as `text`."""
        from services.core.text import TextEncoding

        return self._local(TEXT, TextEncoding)

    @property
    def image_encoding(self) -> ImageEncoding:
        """The in-process image side: what a process hosting the ImageEncoder has as `images`."""
        from services.core.images import ImageEncoding

        return self._local(IMAGES, ImageEncoding)

    def _local(self, name: str, kind: type[_T]) -> _T:
        component = self._started(name)
        if not isinstance(component, kind):
            raise RuntimeError(f"module {name} is a client of a peer here, not in-process")
        return component

    def _started(self, name: str) -> Any:
        if name not in self.components:
            raise RuntimeError(f"module {name} is not started (target {self.settings.target})")
        return self.components[name]


# --- init functions ----------------------------------------------------------------------


def _inference(app: App) -> Any:
    from services.inference.factory import build_models

    return build_models(app.settings.common)


def _store(app: App) -> Any:
    from services.store.factory import build_store

    models = app.models
    versions = [(v, models.backend(v).info.embed_dim) for v in models.versions]
    store = build_store(app.settings.common.store, versions)
    live = store.live_version(fresh=True)
    if live not in models.versions:
        store.close()
        raise ValueError(
            f"the store's live model version is {live}, which this process does not load "
            f"({list(models.versions)}): add its checkpoint to common.standby_models, or "
            "upgrade the store to one of these first"
        )
    return store


def _text(app: App) -> Any:
    from services.core.text import TextEncoding
    from services.text_encoder.client import TextEncoderClient
    from teran.tokenizer import load_tokenizer

    if app.hosts(TEXT_ENCODER) or app.settings.ranker.text_encoder_url is None:
        models = app.models
        tokenizers = {v: load_tokenizer(models.checkpoints[v]) for v in models.versions}
        cfg = app.settings.text_encoder
        return TextEncoding(models, tokenizers, cfg.max_sentences, cfg.max_sentence_chars)
    return TextEncoderClient(
        app.settings.ranker.text_encoder_url, security=peer_security(app.settings.server)
    )


def _images(app: App) -> Any:
    from services.core.images import ImageEncoding
    from services.image_encoder.client import ImageEncoderClient

    if app.hosts(IMAGE_ENCODER) or app.settings.ranker.image_encoder_url is None:
        return ImageEncoding(app.models, app.settings.image_encoder)
    return ImageEncoderClient(
        app.settings.ranker.image_encoder_url, security=peer_security(app.settings.server)
    )


def _text_encoder(app: App) -> Any:
    from services.text_encoder.service import SERVICE, TextEncoderServicer
    from teran_protos.v1 import text_encoder_pb2_grpc

    servicer = TextEncoderServicer(app.text_encoding)
    text_encoder_pb2_grpc.add_TextEncoderServicer_to_server(servicer, app.server.server)
    app.server.add_service(SERVICE)
    return servicer


def _image_encoder(app: App) -> Any:
    from services.image_encoder.service import SERVICE, ImageEncoderServicer
    from teran_protos.v1 import image_encoder_pb2_grpc

    servicer = ImageEncoderServicer(
        app.image_encoding,
        app.store,
        max_in_flight=app.settings.image_encoder.max_in_flight,
    )
    image_encoder_pb2_grpc.add_ImageEncoderServicer_to_server(servicer, app.server.server)
    app.server.add_service(SERVICE)
    return servicer


def _ranker(app: App) -> Any:
    from services.ranker.search import Ranker
    from services.ranker.service import SERVICE, RankerServicer
    from teran_protos.v1 import ranker_pb2_grpc

    cfg = app.settings.ranker
    ranker = Ranker(
        app.store,
        app.text,
        cfg.candidates,
        cfg.max_top_k,
        cfg.max_offset,
        cfg.max_query_chars,
    )
    servicer = RankerServicer(ranker, app.images, cfg.max_payload_bytes)
    ranker_pb2_grpc.add_RankerServicer_to_server(servicer, app.server.server)
    app.server.add_service(SERVICE)
    return servicer


def _admin(app: App) -> Any:
    from services.upgrade.reindex import Reindexer
    from services.upgrade.service import SERVICE, AdminServicer
    from teran_protos.v1 import admin_pb2_grpc

    reindexer = Reindexer(app.store, app.image_encoding, app.text)
    servicer = AdminServicer(reindexer, app.models)
    admin_pb2_grpc.add_AdminServicer_to_server(servicer, app.server.server)
    app.server.add_service(SERVICE)
    return servicer


def _gateway(app: App) -> Any:
    from services.gateway.runner import Gateway

    own = None if app.settings.gateway.upstream else app.server.address
    return Gateway.start(app.settings, own, peer_security(app.settings.server))


def _close(component: Any) -> None:
    close = getattr(component, "close", None)
    if close is not None:
        close()


MODULES: dict[str, Module] = {
    m.name: m
    for m in (
        Module(INFERENCE, _inference, stop=_close),
        Module(STORE, _store, (INFERENCE,), stop=_close),
        Module(TEXT, _text, (INFERENCE,), stop=_close),
        Module(IMAGES, _images, (INFERENCE,), stop=_close),
        Module(TEXT_ENCODER, _text_encoder, (TEXT, INFERENCE)),
        Module(IMAGE_ENCODER, _image_encoder, (IMAGES, STORE, INFERENCE), stop=_close),
        Module(RANKER, _ranker, (STORE, TEXT, IMAGES, INFERENCE)),
        Module(ADMIN, _admin, (STORE, TEXT, IMAGES, INFERENCE)),
        Module(GATEWAY, _gateway, stop=_close),
    )
}


def resolve(targets: tuple[str, ...]) -> list[str]:
    """Modules to start for `targets`, dependencies first."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dep in MODULES[name].deps:
            visit(dep)
        order.append(name)

    for target in targets:
        visit(target)
    return order


def start_modules(app: App) -> None:
    """Init every module the target needs; on failure stop what started, then re-raise."""
    try:
        for name in resolve(app.services):
            log.info("starting module %s", name)
            app.components[name] = MODULES[name].init(app)
            app.order.append(name)
    except BaseException:
        stop_modules(app)
        raise


def stop_modules(app: App) -> None:
    for name in reversed(app.order):
        stop = MODULES[name].stop
        if stop is not None:
            try:
                stop(app.components[name])
            except Exception:
                log.exception("stopping module %s failed", name)
    app.order.clear()

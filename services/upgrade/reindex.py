"""Deriving a model version's indexes from the sources, and moving the live alias to it.

The sources collection is the system of record; each index point carries the revision of the
source it was made from. Bringing version V up to date is therefore a diff: every source whose
revision V lacks or holds stale is re-encoded, every point of V without a source is deleted.
That diff is idempotent and converges under concurrent writes (a write changes a revision,
which the next pass sees), so an upgrade is:

1. copy: diff passes until what is left is small (writes keep arriving meanwhile);
2. switch: both aliases move to V in one atomic store operation;
3. catch-up: one more diff picks up what was written into the previous version around the
   switch. A writer stores the source before its points and re-reads the alias afterwards
   (writing into the new version too if it moved), so a write that this pass cannot see has
   already reached the new version; the grace period before the pass only covers a Qdrant
   cluster's nodes learning of the switch late.

A source the version cannot encode (another model family's regions, a sentence its tokenizer
refuses) is skipped and reported: counted in the progress with a few examples, all of them
logged; it stays in the sources and every later pass retries it, so one bad item never blocks
an upgrade.

Search reads the alias once per request and uses that version for the query and the stored
vectors, so it answers throughout and never mixes versions.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.core.image_index import index_images, source_input
from services.core.images import ImageEncoding, ImageInput
from services.core.sentence_index import TextEncoder, index_sentences
from services.errors import FailedPrecondition, ServiceError
from services.metrics import UPGRADE_ITEMS, UPGRADE_PHASE
from services.store import Source, SourceKind, VectorStore, VersionIndex

log = logging.getLogger(__name__)

KINDS: tuple[SourceKind, ...] = ("image", "sentence")
EXAMPLES = 5
"""Skipped sources named in each progress report (the log names them all, up to 20)."""


class Phase(enum.IntEnum):
    """Values of `teran.v1.UpgradeProgress.Phase`."""

    COPY = 1
    SWITCH = 2
    CATCH_UP = 3
    DONE = 4


@dataclass
class Progress:
    phase: Phase
    version: str
    total: int = 0
    done: int = 0
    live: str = ""
    skipped: int = 0
    """Sources this pass could not encode so far, and the first few of them."""
    examples: list[str] = field(default_factory=list)


@dataclass
class SyncResult:
    changed: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    """(kind, id, why) of sources the version cannot encode: skipped."""

    def progress(
        self, phase: Phase, version: str, total: int = 0, done: int = 0, live: str = ""
    ) -> Progress:
        examples = [describe(f) for f in self.failed[:EXAMPLES]]
        return Progress(phase, version, total, done, live, len(self.failed), examples)


class Cancelled(Exception):
    """The caller went away; what was written so far stays valid (the next run resumes)."""


class Reindexer:
    def __init__(
        self,
        store: VectorStore,
        images: ImageEncoding,
        text: TextEncoder,
        batch: int = 32,
        max_copy_passes: int = 5,
    ) -> None:
        self.store = store
        self.images = images
        self.text = text
        self.batch = batch
        self.max_copy_passes = max_copy_passes
        self._running = threading.Lock()

    def plan(self, kind: SourceKind, version: str) -> tuple[list[str], list[str]]:
        """(ids to encode, ids to delete) that bring `version`'s `kind` index in line."""
        sources = self.store.source_revisions(kind)
        indexed = self.store.index(version).of(kind).revisions()
        stale = [i for i, rev in sources.items() if indexed.get(i) != rev]
        orphans = [i for i in indexed if i not in sources]
        return stale, orphans

    def sync(
        self,
        version: str,
        phase: Phase,
        report: Callable[[Progress], None] = lambda p: None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> SyncResult:
        """One diff pass over both kinds; returns what it changed and what it could not."""
        result = SyncResult()
        index = self.store.index(version)
        plans = {kind: self.plan(kind, version) for kind in KINDS}
        total = sum(len(stale) + len(orphans) for stale, orphans in plans.values())
        done = 0
        report(result.progress(phase, version, total, done))
        for kind, (stale, orphans) in plans.items():
            if orphans:
                index.of(kind).delete(orphans)
                done += len(orphans)
                result.changed += len(orphans)
            for start in range(0, len(stale), self.batch):
                if cancelled():
                    raise Cancelled(f"upgrade to {version} cancelled after {done} of {total}")
                ids = stale[start : start + self.batch]
                found = [s for s in self.store.get_sources(kind, ids) if s is not None]
                if kind == "image":
                    self._index_images(found, index, result)
                elif found:
                    failed = index_sentences(self.text, index, found)
                    result.failed += [("sentence", s.id, err.message) for s, err in failed]
                    result.changed += len(found) - len(failed)
                done += len(ids)
                report(result.progress(phase, version, total, done))
        return result

    def _index_images(
        self, sources: Sequence[Source], index: VersionIndex, result: SyncResult
    ) -> None:
        ok: list[Source] = []
        inputs: list[ImageInput] = []
        for source in sources:
            try:
                inputs.append(source_input(self.images, source, index.version))
                ok.append(source)
            except ServiceError as err:  # this model cannot read it (e.g. pictures vs regions)
                result.failed.append(("image", source.id, err.message))
        if ok:
            index_images(self.images, index, ok, inputs)
            result.changed += len(ok)

    def upgrade(
        self,
        version: str,
        grace_s: float = 5.0,
        switch: bool = True,
        report: Callable[[Progress], None] = lambda p: None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        """Bring `version` up to date, then make it live (see the module docstring)."""
        if version not in self.store.opened_versions():
            raise FailedPrecondition(
                f"model version {version!r} is not loaded by this server "
                f"(it loads {self.store.opened_versions()})"
            )
        if not self._running.acquire(blocking=False):
            raise FailedPrecondition("an upgrade is already running on this server")
        report = _exported(report)
        try:
            for _ in range(self.max_copy_passes):
                result = self.sync(version, Phase.COPY, report, cancelled)
                if result.changed <= self.batch:  # what is left is what arrives meanwhile
                    break
            if switch:
                self.store.switch_live(version)
                log.info("live model version is now %s", version)
                report(Progress(Phase.SWITCH, version, live=version))
                time.sleep(grace_s)
                result = self.sync(version, Phase.CATCH_UP, report, cancelled)
            if result.failed:
                log.error("%s", _failures(version, result.failed))
            live = self.store.live_version(fresh=True)
            report(result.progress(Phase.DONE, version, live=live))
        finally:
            self._running.release()


def _exported(report: Callable[[Progress], None]) -> Callable[[Progress], None]:
    """`report`, also setting the upgrade gauges (dashboards follow an upgrade through them)."""

    def both(p: Progress) -> None:
        UPGRADE_PHASE.labels(p.version).set(int(p.phase))
        if p.phase in (Phase.COPY, Phase.CATCH_UP):
            UPGRADE_ITEMS.labels(p.version, "total").set(p.total)
            UPGRADE_ITEMS.labels(p.version, "done").set(p.done)
        if p.phase != Phase.SWITCH:
            UPGRADE_ITEMS.labels(p.version, "skipped").set(p.skipped)
        report(p)

    return both


def _failures(version: str, failed: list[tuple[str, str, str]]) -> str:
    shown = "; ".join(describe(f) for f in failed[:20])
    more = f" (and {len(failed) - 20} more)" if len(failed) > 20 else ""
    return (
        f"model version {version} cannot encode {len(failed)} stored sources, skipped "
        f"(they stay in the sources; delete or re-ingest them): {shown}{more}"
    )


def describe(failed: tuple[str, str, str]) -> str:
    kind, item_id, why = failed
    return f"{kind} {item_id!r}: {why}"

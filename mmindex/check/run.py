"""One ``mmindex check`` run: read every committed file of a dataset against its record and, with ``repair``,
rebuild what can be rebuilt, in stage order (shards from their sources, then embeddings, then indexes), record
files that have no record yet, and check again."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field, replace

from mmindex import storage
from mmindex.check.scan import Checked, Finding, scan
from mmindex.check.shards import LostSample, rebuild_shard
from mmindex.check.units import Unit
from mmindex.dataset import Dataset, checksums, shard_name
from mmindex.dataset.indexes import repair_pointer
from mmindex.dataset.lock import exclusive
from mmindex.index.settings import BuildSettings
from mmindex.index.store import IndexFiles
from mmindex.sizes import counted
from mmindex.spaces import Space


@dataclass(frozen=True)
class CheckSettings:
    dataset: str
    repair: bool = False


@dataclass
class CheckReport:
    root: str
    files: int = 0                                         # files read
    bytes: int = 0
    found: list[Finding] = field(default_factory=list)     # what the check found
    repaired: list[str] = field(default_factory=list)      # what the repair did
    lost: list[LostSample] = field(default_factory=list)   # samples no repair can bring back
    remaining: list[Finding] = field(default_factory=list)  # after the repair: what is still wrong

    @property
    def damaged(self) -> bool:
        """Whether anything is still damaged (after the repair, if one ran)."""
        return any(f.damaged for f in (self.remaining if self.repaired or self.lost else self.found))


def check(settings: CheckSettings) -> CheckReport:
    root = settings.dataset
    dataset = Dataset(root)
    if not dataset.committed_shards():
        raise FileNotFoundError(f"no dataset at {root}: check the path (a dataset holds shards/ and samples/)")
    results = scan(dataset)
    report = CheckReport(root, sum(len(r.sums) for r in results),
                         sum(s.bytes for r in results for s in r.sums.values()),
                         [f for r in results for f in r.findings])
    if settings.repair and report.found:
        unrebuilt = _repair(dataset, results, report)
        again = f"restore it from a copy, or the sources listed as lost and run `mmindex check {root} --repair` again"
        report.remaining = [replace(f, repair=f"not rebuilt ({unrebuilt[f.path]}): {again}") if f.path in unrebuilt
                            else f for r in scan(dataset) for f in r.findings]
    return report


def _repair(dataset: Dataset, results: list[Checked], report: CheckReport) -> dict[str, str]:
    """Repairs what it can, in stage order; returns the shard tars it could not rebuild, and why."""
    def only_unrecorded(result: Checked) -> bool:  # good files, without a (readable) record
        return bool(result.findings) and all(f.path == result.unit.record or not f.damaged for f in result.findings)

    damaged = [r for r in results if r.damaged and not only_unrecorded(r)]
    unrebuilt: dict[str, str] = {}
    with exclusive(dataset, "check"):
        for result in filter(only_unrecorded, results):
            checksums.write_record(result.unit.record, result.sums)
            report.repaired.append(f"recorded checksums: {result.unit.label}")
        for unit in (r.unit for r in damaged if r.unit.kind == "shard"):
            if any(f.path == unit.files[1] for r in damaged if r.unit is unit for f in r.findings):
                continue  # its samples parquet is damaged: nothing says what the shard held
            rebuilt = rebuild_shard(dataset, unit.number or 0)
            if rebuilt.lost:
                report.lost += rebuilt.lost
                unrebuilt[unit.files[0]] = rebuilt.reason
            else:
                report.repaired.append(f"rebuilt {unit.files[0]} from its sources (byte for byte as recorded)")
        spaces: dict[str, Space] = {}
        for unit in (r.unit for r in damaged if r.unit.kind == "pointer" and r.unit.store and r.unit.modality):
            named = repair_pointer(IndexFiles(unit.store, unit.modality).root)
            report.repaired.append(f"pointed {unit.files[0]} at {named}, the newest complete generation" if named
                                   else f"removed {unit.files[0]} (no complete generation to point at)")
            if named is None:
                spaces[unit.store.space.name] = unit.store.space  # its index is built again below
        for unit in (r.unit for r in damaged if r.unit.kind in ("embeddings", "index") and r.unit.store):
            spaces[unit.store.space.name] = unit.store.space
            if unit.kind == "embeddings":
                storage.delete([unit.store.parquet_path(unit.number or 0)])  # uncommitted: the next embed redoes it
    indexed = {r.unit.store.space.name for r in results if r.unit.kind in ("index", "pointer") and r.unit.store}
    excluding = {r.unit.store.space.name for r in results if r.unit.kind == "index" and r.unit.store
                 and _left_out_duplicates(r.unit)}
    for space in spaces.values():
        build = BuildSettings(exclude_duplicates=space.name in excluding)
        _reembed_and_reindex(dataset, space, [r.unit for r in damaged], build if space.name in indexed else None,
                             report)
    return unrebuilt


def _left_out_duplicates(unit: Unit) -> bool:
    """Whether an index left near-duplicates out (--exclude-duplicates), so that its rebuild does too."""
    with contextlib.suppress(OSError, ValueError):
        return bool(json.loads(storage.read_bytes(unit.files[2])).get("excluded"))
    return False


def _reembed_and_reindex(dataset: Dataset, space: Space, damaged: list[Unit], indexed: BuildSettings | None,
                         report: CheckReport) -> None:
    """Embeds the space's damaged shards again, then rebuilds its indexes if it had any (as ``indexed`` says)."""
    from mmindex.embed.run import EmbedSettings, embed
    from mmindex.index.run import IndexSettings, build_indexes

    mine = [u for u in damaged if u.store and u.store.space.name == space.name]
    shards = [u.number for u in mine if u.kind == "embeddings" and u.number is not None]
    if shards:
        # A repair re-embeds a few shards: decoding in the worker itself spares starting decode processes.
        result = embed(EmbedSettings(dataset.root, space.name, decode_workers=0), space=space)
        report.repaired.append(f"embedded {counted(result.committed, 'shard')} again in space {space.name!r} "
                               f"({', '.join(shard_name(n) for n in shards)})")
    if indexed:
        built = build_indexes(IndexSettings(dataset.root, space.name, indexed), space=space)
        modalities = [b.modality for b in built.indexes]
        report.repaired.append(f"rebuilt the {', '.join(modalities)} {'index' if len(modalities) == 1 else 'indexes'} "
                               f"of space {space.name!r}")

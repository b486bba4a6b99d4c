"""Reading every committed file of a dataset against its record: what is missing, changed or unreadable, and
the command that repairs each."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmindex import storage
from mmindex.check.units import Unit, parse_problem, unit_problem, units
from mmindex.dataset import Dataset, checksums, shard_name
from mmindex.progress import Progress


@dataclass(frozen=True)
class Finding:
    path: str
    problem: str
    repair: str
    damaged: bool = True   # False: a good file that has no record yet (written before records were kept)


@dataclass
class Checked:
    """One unit as found: its files' sums now, and what is wrong with it."""

    unit: Unit
    sums: dict[str, checksums.Sum] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return any(f.damaged for f in self.findings)


def repair_of(unit: Unit, path: str, root: str) -> str:
    """The command (or act) that repairs a damaged file of ``unit``."""
    fix = f"mmindex check {root} --repair"
    if unit.kind == "shard" and path == unit.files[1]:
        return "restore it from a copy (it lists the shard's samples and their sources)"
    if unit.kind == "shard":
        return f"`{fix}` rebuilds it from its sources"
    if unit.kind == "rejects":
        return "restore it from a copy, or delete it and run the same `mmindex ingest` again to list those inputs again"
    if unit.duplicates is not None:
        dedup = f"`mmindex dedup {root} --model {unit.duplicates.space}`"
        if unit.kind == "descriptors":
            return (f"delete {unit.duplicates.descriptors_parquet(unit.number or 0)} and run {dedup} again: it "
                    f"describes shard {shard_name(unit.number or 0)} again")
        delete = " and ".join(dict.fromkeys((path, unit.duplicates.summary_path)))
        return (f"delete {delete} and run {dedup} again (with the --threshold it ran with): it forms the groups "
                f"again from the descriptors")
    space = unit.store.space.name if unit.store else ""
    if unit.kind == "pointer":
        return (f"`{fix}` points it at the newest complete generation (or, with none, rebuilds the index); it is "
                f"never followed meanwhile")
    if unit.kind == "embeddings":
        return f"`{fix}` embeds shard {shard_name(unit.number or 0)} again in space {space!r}"
    return f"`{fix}` rebuilds the index (as does `mmindex index {root} --model {space}`)"


def check_unit(unit: Unit, root: str, progress: Progress, deep: bool = True) -> Checked:
    """Every file of ``unit`` read whole: present, of its recorded size and sha256, and parsing; then the unit's
    files against each other (``deep``)."""
    checked = Checked(unit)
    if unit.kind == "pointer":
        checked.findings.append(Finding(unit.files[0], unit.problem or "damaged", repair_of(unit, unit.files[0], root)))
        return checked
    try:
        recorded = checksums.read_record(unit.record)
    except checksums.RecordUnreadable as err:
        recorded = None
        checked.findings.append(Finding(unit.record, str(err), f"`mmindex check {root} --repair` records the files "
                                                              f"again once each of them parses"))
    for path in unit.files:
        name = checksums.relative(root, path)
        if not storage.exists(path):
            checked.findings.append(Finding(path, "missing", repair_of(unit, path, root)))
            continue
        checked.sums[name] = checksums.file_sum(path)
        progress.add()
        wrong = checksums.mismatch(checked.sums[name], recorded[name]) if recorded and name in recorded else None
        wrong = wrong or parse_problem(path, unit.kind)
        if wrong:
            checked.findings.append(Finding(path, wrong, repair_of(unit, path, root)))
    if deep and not checked.findings:
        problem = unit_problem(unit)
        if problem:
            checked.findings.append(Finding(unit.files[0], problem, repair_of(unit, unit.files[0], root)))
    if recorded is None and not checked.findings:
        checked.findings += [Finding(path, "no checksum recorded (written before mmindex recorded them)",
                                     f"`mmindex check {root} --repair` records it", damaged=False)
                             for path in unit.files]
    return checked


def scan(dataset: Dataset) -> list[Checked]:
    """Every committed unit of the dataset, checked. An index is compared with the embeddings and samples only
    when those are whole (a damaged file is reported once, with its own repair)."""
    progress = Progress("check: read", unit="files")
    results: list[Checked] = []
    damaged: set[str | None] = set()   # spaces whose embeddings are damaged; None: a shard is
    for unit in units(dataset):
        space = unit.store.space.name if unit.store else None
        upstream = unit.kind == "index" and (None in damaged or space in damaged)
        checked = check_unit(unit, dataset.root, progress, deep=not upstream)
        if checked.damaged and unit.kind in ("shard", "embeddings"):
            damaged.add(space)
        results.append(checked)
    return results

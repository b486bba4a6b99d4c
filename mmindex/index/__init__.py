"""``mmindex index``: one FAISS index per modality of a space, chosen, trained, tuned and checked. vectors.py reads the
committed embeddings shard by shard (memory-mapped), choose.py picks an index type for the vector count, dimension,
memory budget and target recall, build.py trains, fills, tunes (tune.py) and saves it, searchable.py searches it as
tuned (with re-ranking), exclusion.py says which near-duplicates an index leaves out (--exclude-duplicates),
store.py reads and writes it as FAISS does and checks it against the dataset (its files, published whole as
generations, are mmindex.dataset.indexes'). steps.py declares the stage's steps (see mmindex.stages); run.py is the
driver: settings, lock, report.
"""

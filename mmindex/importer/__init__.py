"""``mmindex import``: embeddings made elsewhere (LAION's releases, a user's own GPUs) and their metadata brought
into a dataset, as the embeddings of one space, so that index, search, serve and check work on them."""

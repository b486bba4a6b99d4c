from pipelines.ingest.pipeline import run
from pipelines.options import main

main(run)

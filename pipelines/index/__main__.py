from pipelines.index.pipeline import run
from pipelines.options import main

main(run)

from pipelines.embed.pipeline import run
from pipelines.options import main

main(run)

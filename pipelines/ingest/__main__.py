import json
import logging

from pipelines.ingest.pipeline import run

logging.basicConfig(level=logging.INFO)
print(json.dumps(run(), indent=2))

import json
import logging
from dataclasses import asdict

from pipelines.ingest.pipeline import run

logging.basicConfig(level=logging.INFO)
print(json.dumps(asdict(run()), indent=2))

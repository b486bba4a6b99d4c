"""`mmindex check`: every committed file read against its recorded size and sha256 (mmindex.dataset.checksums), and the
repair of what can be rebuilt: units.py (what a dataset committed), scan.py (the check), shards.py (shards
rebuilt from their sources), run.py (the driver)."""

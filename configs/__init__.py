"""Model-space presets (spaces/) and Beam runner profiles (runners/), installed as the package mmindex.configs."""

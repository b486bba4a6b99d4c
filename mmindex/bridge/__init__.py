"""Bridges between spaces that share the text modality (C-MCR, Wang et al. 2023): a mapping learned from texts
embedded by both spaces' text encoders carries one space's other modalities into the other.

mapping.py is the mapping (NumPy, stored as .npz); learn.py learns it; texts.py gathers its training texts;
space.py makes ``kind: bridge`` spaces of it; multilingual.py serves queries in any language to the offline
space through a shipped bridge (multilingual-e5-small -> MiniLM).
"""

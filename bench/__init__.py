"""``make bench``: hot-path benchmarks for aijobs. See ``bench/__main__.py``."""
